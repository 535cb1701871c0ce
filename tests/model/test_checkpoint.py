"""Checkpoints load with weights_only, refuse corrupt files and other architectures, verify checksums."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.model.checkpoint import load_model, read_checkpoint, save_checkpoint, sha256sum


def test_round_trip(tmp_path):
    model = InstanceUNet(ModelConfig(width=4, anchor_base=24.0))
    save_checkpoint(tmp_path / "m.pt", model, step=7, meta={"note": "x"})
    loaded, ckpt = load_model(tmp_path / "m.pt", expected_sha256=sha256sum(tmp_path / "m.pt"))
    assert loaded.config == model.config and ckpt["step"] == 7 and ckpt["meta"] == {"note": "x"}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert not loaded.training


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(HtsError, match="corrupt"):
        load_model(path)


def test_truncated_file(tmp_path):
    save_checkpoint(tmp_path / "m.pt", InstanceUNet(ModelConfig(width=4)))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(HtsError, match="corrupt"):
        load_model(tmp_path / "t.pt")


def test_pickled_object_is_refused(tmp_path):
    import argparse

    torch.save({"format": "hts-checkpoint", "obj": argparse.Namespace(x=1)}, tmp_path / "evil.pt")
    with pytest.raises(HtsError, match="corrupt"):
        read_checkpoint(tmp_path / "evil.pt")


def test_other_architecture(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, InstanceUNet(ModelConfig(width=4)))
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["width"] = 8  # weights of width 4 under a width-8 configuration
    torch.save(ckpt, path)
    with pytest.raises(HtsError, match="does not match its architecture"):
        load_model(path)


def test_not_an_hts_checkpoint_and_missing(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(HtsError, match="not an hts checkpoint"):
        load_model(tmp_path / "plain.pt")
    with pytest.raises(HtsError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_checksum_mismatch(tmp_path):
    save_checkpoint(tmp_path / "m.pt", InstanceUNet(ModelConfig(width=4)))
    with pytest.raises(HtsError, match="checksum"):
        load_model(tmp_path / "m.pt", expected_sha256="0" * 64)


def test_inference_settings_travel_with_the_checkpoint(tmp_path):
    from hts.engine.infer import fg_threshold, proposal_params

    model = InstanceUNet(ModelConfig(width=4))
    assert fg_threshold(model) == 0.5 and proposal_params(model).score_threshold == 0.5
    save_checkpoint(tmp_path / "m.pt", model, meta={"inference": {"fg_threshold": 0.8, "score_threshold": 0.4}})
    loaded, _ = load_model(tmp_path / "m.pt")
    assert fg_threshold(loaded) == 0.8 and proposal_params(loaded).score_threshold == 0.4


def _edited(tmp_path, edit) -> Path:
    """A width-4 checkpoint whose raw dict was changed by ``edit`` (as a hostile file would be)."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, InstanceUNet(ModelConfig(width=4)))
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def _set_config(key, value):
    return lambda c: c["config"].__setitem__(key, value)


CONFIG_CASES = [
    ("width 4096", _set_config("width", 4096), "width"),
    ("width a string", _set_config("width", "16"), "width"),
    ("width a bool", _set_config("width", True), "width"),
    ("width zero", _set_config("width", 0), "width"),
    ("rpn a number", _set_config("rpn", 1), "rpn"),
    ("anchor_base nan", _set_config("anchor_base", float("nan")), "anchor_base"),
    ("anchor_base negative", _set_config("anchor_base", -32.0), "anchor_base"),
    ("anchor_base a string", _set_config("anchor_base", "32"), "anchor_base"),
    ("diameter huge", _set_config("diameter", 1e9), "diameter"),
    ("diameter a list", _set_config("diameter", [32.0]), "diameter"),
    ("scales empty", _set_config("scales", []), "scales"),
    ("scales strings", _set_config("scales", ["a"]), "scales"),
    ("scales a number", _set_config("scales", 2.0), "scales"),
    ("aspect_ratios too many", _set_config("aspect_ratios", [1.0] * 1000), "aspect_ratios"),
    ("aspect_ratios zero", _set_config("aspect_ratios", [0.0]), "aspect_ratios"),
    ("unknown field", _set_config("depth", 5), "unknown"),
    ("config a list", lambda c: c.__setitem__("config", [16]), "'config'"),
    ("config missing", lambda c: c.pop("config"), "'config'"),
]


@pytest.mark.parametrize("case, edit, field", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_hostile_config_is_refused_in_one_line(tmp_path, case, edit, field):
    path = _edited(tmp_path, edit)
    with pytest.raises(HtsError, match="invalid model configuration") as err:
        load_model(path)
    assert str(path) in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


def test_weight_shapes_are_checked_before_any_model_is_allocated(tmp_path, monkeypatch):
    """Issue 16 (11): the model of the config was built (2.4 GB at width 4096) before its shapes were checked."""
    from hts.model import checkpoint

    built = []

    class Recording(InstanceUNet):
        def __init__(self, config):
            built.append(str(torch.get_default_device()))
            super().__init__(config)

    monkeypatch.setattr(checkpoint, "InstanceUNet", Recording)
    path = _edited(tmp_path, _set_config("width", 64))  # width-4 weights under a width-64 config
    with pytest.raises(HtsError, match="does not match its architecture") as err:
        load_model(path)
    assert "field 'state_dict'" in str(err.value) and "expected (64, 1, 3, 3)" in str(err.value)
    assert built and set(built) == {"meta"}, built  # shapes came from a meta-device model only
    built.clear()
    load_model(_edited(tmp_path, lambda c: None))
    assert built[-1] == "cpu"  # a good checkpoint is then built for real


def _set_weight(value):
    def edit(c):
        key = next(iter(c["state_dict"]))
        c["state_dict"][key] = value(c["state_dict"][key])
    return edit


STATE_CASES = [
    ("a weight of another dtype", _set_weight(lambda t: t.double()), "dtype"),
    ("a weight that is a list", _set_weight(lambda t: t.tolist()), "names to tensors"),
    ("a NaN weight", _set_weight(lambda t: torch.full_like(t, float("nan"))), "NaN"),
    ("an inf weight", _set_weight(lambda t: torch.full_like(t, float("inf"))), "infinite"),
    ("state_dict a list", lambda c: c.__setitem__("state_dict", [1, 2]), "names to tensors"),
    ("state_dict missing", lambda c: c.pop("state_dict"), "names to tensors"),
    ("inference threshold a string", lambda c: c["meta"].__setitem__("inference", {"fg_threshold": "high"}),
     "meta.inference.fg_threshold"),
    ("inference threshold above 1", lambda c: c["meta"].__setitem__("inference", {"fg_threshold": 2.0}),
     "meta.inference.fg_threshold"),
    ("meta a list", lambda c: c.__setitem__("meta", [1]), "'meta'"),
]


@pytest.mark.parametrize("case, edit, reason", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_bad_weights_or_settings_are_refused_in_one_line(tmp_path, case, edit, reason):
    path = _edited(tmp_path, edit)
    with pytest.raises(HtsError, match=re.escape(reason)) as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _write_other(path: Path, kind: str) -> None:
    if kind == "plain pickle":
        path.write_bytes(pickle.dumps({"format": "hts-checkpoint", "config": {}}))
    elif kind == "numpy pickle":
        path.write_bytes(pickle.dumps(np.zeros(3)))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("weights.txt", "1 2 3")
    elif kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated zip":
        save_checkpoint(path, InstanceUNet(ModelConfig(width=4)))
        path.write_bytes(path.read_bytes()[:-100])
    elif kind == "legacy torch":
        torch.save({"format": "hts-checkpoint"}, path, _use_new_zipfile_serialization=False)
    elif kind == "a list":
        torch.save([1, 2], path)
    elif kind == "other format":
        torch.save({"format": "other", "version": 1}, path)
    elif kind == "other version":
        torch.save({"format": "hts-checkpoint", "version": 99}, path)


@pytest.mark.parametrize("kind", ["plain pickle", "numpy pickle", "zip", "npz", "empty", "truncated zip",
                                  "legacy torch", "a list", "other format", "other version"])
def test_files_that_are_not_checkpoints_are_refused_without_torch_warnings(tmp_path, kind):
    """Issue 16 (11): a plain pickle printed torch's 2-line warning before the one-line refusal."""
    path = tmp_path / "model.pt"
    _write_other(path, kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(HtsError) as err:
            load_model(path)
    assert not caught, [str(w.message) for w in caught]
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_hts_eval_with_a_pickle_as_model_prints_one_line(tmp_path, capfd):
    from hts.cli import main

    labels = np.zeros((32, 32), np.uint16)
    labels[4:12, 4:12] = 1
    image = (labels * 200).astype(np.uint8)
    data = tmp_path / "data.npz"
    np.savez(data, n=np.asarray(1), images_0000=image, labels_0000=labels)
    model = tmp_path / "model.pt"
    _write_other(model, "plain pickle")
    assert main(["eval", "--data", str(data), "--model", str(model), "--json"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"hts: error: checkpoint {model}"), err
