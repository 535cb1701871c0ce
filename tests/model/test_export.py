"""The bioimage.io export: a valid package (checked offline with bioimageio.spec) whose weights are the network."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hts.engine.preprocess import normalize
from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig, export
from hts.model.export import (
    export_bioimageio,
    scale_range,
    sha256_file,
    validate_bioimageio,
)
from hts.model.pretrained import default_model

spec = pytest.importorskip("bioimageio.spec", reason="bioimageio.spec (the test / bioimageio extra) not installed")
# torch >= 2.11 deprecates torch.jit.load; TorchScript is still the zoo's PyTorch weights format
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The shipped model exported once (with its zip) for all tests here."""
    return export_bioimageio(default_model(), tmp_path_factory.mktemp("bmz") / "hts-instance-unet", make_zip=True)


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """No network: every HTTP request of bioimageio.spec (httpx) and every socket connection raises."""
    import httpx

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise AssertionError(f"network access during offline validation: {args[:2]}")

    for name in ("request", "get", "head", "post", "put", "stream"):
        monkeypatch.setattr(httpx, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def _rdf(package: Path) -> dict:
    return yaml.safe_load((package / "rdf.yaml").read_text())


def _net_outputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The un-exported shipped network on a normalised (1, 1, H, W) input: fg, objectness, deltas as exported."""
    net = default_model()
    with torch.no_grad():
        out = net(torch.from_numpy(x))
    b, _, h, w = x.shape
    hf, wf, k = h // 16, w // 16, net.config.num_anchors
    fg = out["logits"].softmax(1)[:, 1:2]
    obj = out["rpn_logits"].softmax(-1)[..., 1].view(b, hf, wf, k).permute(0, 3, 1, 2)
    deltas = out["rpn_deltas"].view(b, hf, wf, k, 4).permute(0, 3, 4, 1, 2).reshape(b, 4 * k, hf, wf)
    return fg.numpy(), obj.numpy(), deltas.numpy()


@pytest.mark.parametrize("which", ["folder", "zip"])
def test_package_is_valid_offline(package, offline, which):
    from bioimageio.spec import InvalidDescr, load_description

    source = package / "rdf.yaml" if which == "folder" else package.with_suffix(".zip")
    descr = load_description(source, perform_io_checks=True)
    summary = descr.validation_summary
    assert not isinstance(descr, InvalidDescr), summary.format()
    assert summary.status in ("valid-format", "passed") and summary.errors == [], summary.format()
    assert descr.type == "model" and str(descr.format_version).startswith("0.5")
    assert not offline  # nothing tried the network
    messages = " ".join(w.msg for d in summary.details for w in d.warnings)
    assert "URL" not in messages and "GitHub" not in messages
    assert [str(t.id) for t in descr.inputs] == ["image"]
    assert [str(t.id) for t in descr.outputs] == ["foreground", "rpn_objectness", "rpn_deltas"]
    assert type(descr.training_data).__module__.endswith("dataset.v0_3")  # the inline CC0 dataset parses as 0.3
    assert validate_bioimageio(package).status == summary.status  # the helper gives the same


def test_rdf_fields_and_checksums(package):
    rdf = _rdf(package)
    weights = rdf["weights"]["torchscript"]
    assert weights["sha256"] == sha256_file(package / weights["source"])
    files = [rdf["documentation"], *rdf["covers"], weights]
    files += [t[key] for t in rdf["inputs"] + rdf["outputs"] for key in ("test_tensor", "sample_tensor")]
    for entry in files:
        assert entry["sha256"] == sha256_file(package / entry["source"]), entry["source"]
    assert rdf["license"] == "BSD-3-Clause" and rdf["training_data"]["license"] == "CC0-1.0"
    assert rdf["inputs"][0]["preprocessing"] == [{"id": "scale_range", "kwargs": {
        "axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.8, "eps": 1e-6}}]
    assert [a.get("id", a["type"]) for a in rdf["inputs"][0]["axes"]] == ["batch", "channel", "y", "x"]
    assert rdf["inputs"][0]["axes"][2]["size"] == {"min": 16, "step": 16}
    assert any(c["doi"] == "10.1038/s41592-019-0612-7" for c in rdf["cite"])  # BBBC038
    readme = (package / "README.md").read_text()
    assert weights["sha256"] in readme and export.SHIPPED_SHA256 in readme  # the shipped model's card summary
    for fact in ("1 and 99.8", "32 px", "NMS at IoU 0.3", "hts.segment", "0.85", "CC0", "AP@0.5 0.860"):
        assert fact in readme, fact
    assert rdf["config"]["hts"]["inference"] == default_model().inference


def test_weights_reproduce_test_tensors_and_network(package):
    rdf = _rdf(package)
    scripted = torch.jit.load(package / rdf["weights"]["torchscript"]["source"])
    raw = np.load(package / "test_input.npy")
    assert raw.shape == (1, 1, 256, 256) and raw.dtype == np.float32
    x = scale_range(raw)
    np.testing.assert_allclose(x[0, 0], normalize(raw[0, 0]), atol=1e-5)  # scale_range is hts's normalisation here
    with torch.no_grad():
        got = [t.numpy() for t in scripted(torch.from_numpy(x))]
    expected = [np.load(package / o["test_tensor"]["source"]) for o in rdf["outputs"]]
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    for g, n in zip(got, _net_outputs(normalize(raw[0, 0])[None, None]), strict=True):  # the same network
        np.testing.assert_allclose(g, n, rtol=1e-4, atol=1e-5)
    fg = expected[0]
    assert fg.min() >= 0 and fg.max() <= 1 and 0.05 < (fg > 0.5).mean() < 0.6  # real nuclei found


def test_weights_take_any_multiple_of_16(package):
    scripted = torch.jit.load(package / "instance_unet_torchscript.pt")
    raw = np.load(package / "test_input.npy")[:, :, :192, :80]
    x = scale_range(raw)
    with torch.no_grad():
        got = [t.numpy() for t in scripted(torch.from_numpy(x))]
    assert [g.shape for g in got] == [(1, 1, 192, 80), (1, 9, 12, 5), (1, 36, 12, 5)]
    for g, n in zip(got, _net_outputs(x), strict=True):
        np.testing.assert_allclose(g, n, rtol=1e-4, atol=1e-5)


def test_plain_unet_exports_one_output(tmp_path, offline):
    net = InstanceUNet(ModelConfig(width=4, rpn=False)).eval()
    folder = export_bioimageio(net, tmp_path / "plain", test_image=np.random.default_rng(0).random((64, 48)))
    rdf = _rdf(folder)
    assert [o["id"] for o in rdf["outputs"]] == ["foreground"]
    assert "No model card was given" in (folder / "README.md").read_text()
    summary = validate_bioimageio(folder)
    assert summary.status in ("valid-format", "passed") and not summary.errors, summary.format()
    with pytest.raises(HtsError, match="multiples of 16"):
        export_bioimageio(net, tmp_path / "bad", test_image=np.zeros((60, 64)))


def test_spec_is_imported_lazily():
    """bioimageio.spec is an extra: hts.model.export imports it only inside a function."""
    tree = ast.parse(Path(export.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(n.startswith(("bioimageio", "dask", "zarr", "yaml", "matplotlib")) for n in names)
