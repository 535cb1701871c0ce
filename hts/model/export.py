"""Export an Instance-U-Net as a BioImage Model Zoo (bioimage.io) model package.

The package (format 0.5, see docs/bioimageio.md) holds TorchScript weights of
:class:`ZooNetwork`, a thin wrapper that maps a normalised ``(1, 1, H, W)``
float32 image to the U-Net foreground probability and, for a model with an
RPN, the stride-16 anchor objectness and box-offset maps; test tensors
computed with those weights; a cover image; a README; and ``rdf.yaml``.
Percentile normalisation is declared as the input's preprocessing
(``scale_range`` 1 / 99.8); resampling to the canonical nucleus diameter, the
RPN proposals + NMS and the watershed layer are documented post-processing
that only ``hts.segment`` performs.

``bioimageio.spec`` (the ``bioimageio`` extra) is imported only by
:func:`validate_bioimageio`; writing a package needs only torch, numpy,
PyYAML and matplotlib.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hts.errors import HtsError
from hts.model.network import STRIDE, InstanceUNet

FORMAT_VERSION = "0.5.14"  # the model format of bioimageio.spec 0.5.14 (the `bioimageio` extra)
WEIGHTS_FILE = "instance_unet_torchscript.pt"
TEST_INPUT, TEST_OUTPUT = "test_input.npy", "test_output.npy"
OUTPUT_IDS = ("foreground", "rpn_objectness", "rpn_deltas")  # the weights' outputs, in order
TEST_FILES = dict(zip(OUTPUT_IDS, (TEST_OUTPUT, "test_rpn_objectness.npy", "test_rpn_deltas.npy")))
SAMPLE_FILES = {"image": "sample_input.tif", **{tid: f"sample_{tid}.tif" for tid in OUTPUT_IDS}}  # imageio-readable
COVER, README = "cover.png", "README.md"
PERCENTILES = (1.0, 99.8)  # hts.engine.preprocess.PERCENTILES, declared as scale_range
EPS = 1e-6  # scale_range's eps: out = (x - p_lo) / (p_hi - p_lo + eps)
SHIPPED_SHA256 = "5aa387c1b36cf84a7efc9b1f9c15093e84adf68815459c06726e19b4f7b2726d"  # default.pt the card below describes

CITE = [
    {"text": "Caicedo et al. 2019, Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl "
             "(BBBC038, the training data)", "doi": "10.1038/s41592-019-0612-7"},
    {"text": "Ronneberger, Fischer and Brox 2015, U-Net: convolutional networks for biomedical image segmentation "
             "(the segmentation branch)", "doi": "10.1007/978-3-319-24574-4_28"},
    {"text": "Ren, He, Girshick and Sun 2017, Faster R-CNN: towards real-time object detection with region proposal "
             "networks (the RPN head whose box centroids seed the watershed)", "doi": "10.1109/TPAMI.2016.2577031"},
]
TAGS = ["nuclei", "instance-segmentation", "semantic-segmentation", "fluorescence-light-microscopy", "2d", "unet",
        "region-proposal-network", "watershed", "pytorch", "torchscript", "dsb2018", "bbbc038", "hts"]


class ZooNetwork(nn.Module):
    """What the exported weights compute: normalised image in, dense network maps out.

    Parameters
    ----------
    net : InstanceUNet
        Its modules are shared, not copied.
    rpn_outputs : bool
        Also return the RPN maps (needs ``net.config.rpn``).
    """

    def __init__(self, net: InstanceUNet, rpn_outputs: bool = True) -> None:
        super().__init__()
        self.encoder, self.decoder = net.encoder, net.decoder
        self.rpn = net.rpn if rpn_outputs else None

    def forward(self, x: torch.Tensor):
        """``(B, 1, H, W)`` normalised, H and W multiples of 16, to the foreground probability ``(B, 1, H, W)``.

        With the RPN also ``(B, k, H/16, W/16)`` object probabilities (channel ``a``: anchor ``a`` of
        :func:`hts.model.anchors.cell_anchors`) and ``(B, 4k, H/16, W/16)`` offsets (channel
        ``4a + i``: ``(tx, ty, tw, th)[i]`` of anchor ``a``, :class:`hts.model.boxes.BoxCoder`).
        """
        features, skips = self.encoder(x)
        fg = self.decoder(features, skips).softmax(1)[:, 1:2]
        if self.rpn is None:
            return fg
        t = self.rpn.conv(features)
        logits = self.rpn.cls(t)  # channel 2a + c: (not object, object) of anchor a
        return fg, torch.sigmoid(logits[:, 1::2] - logits[:, 0::2]), self.rpn.reg(t)


def scale_range(image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES, eps: float = EPS) -> np.ndarray:
    """The package's declared preprocessing, bioimage.io ``scale_range`` over the y and x axes.

    Equal to :func:`hts.engine.preprocess.normalize` up to ``eps`` unless that function's
    saturation or debris rules fire (those are hts only).

    Parameters
    ----------
    image : ndarray
        ``(..., H, W)``; the percentiles are taken over the last two axes.
    percentiles, eps : optional
        As declared in ``rdf.yaml``.

    Returns
    -------
    ndarray
        float32, shape of ``image``.
    """
    arr = np.asarray(image, np.float32)
    lo, hi = np.percentile(arr, percentiles, axis=(-2, -1), keepdims=True)
    return ((arr - lo) / (hi - lo + eps)).astype(np.float32)


def example_image(net: InstanceUNet, size: int = 256, seed: int = 0) -> np.ndarray:
    """A synthetic fluorescence image at the model's canonical nucleus diameter, float32 camera units.

    No debris and no saturation, so :func:`scale_range` and hts's normalisation agree on it.
    """
    from hts.synthetic.nuclei import SyntheticConfig, generate

    diameter = net.config.diameter or 32.0
    config = SyntheticConfig(shape=(size, size), diameter=diameter, density=0.001 * (20.0 / diameter) ** 2, debris=0)
    return generate(config, seed=seed)[0].astype(np.float32)


def export_bioimageio(
    model: InstanceUNet,
    out_dir: str | os.PathLike,
    *,
    name: str = "hts Instance-U-Net fluorescence nuclei",
    description: str | None = None,
    authors: list[dict[str, str]] | None = None,
    maintainers: list[dict[str, str]] | None = None,
    cite: list[dict[str, str]] | None = None,
    version: str | None = None,
    rpn_outputs: bool = True,
    card: str | None = None,
    test_image: np.ndarray | None = None,
    make_zip: bool = False,
) -> Path:
    """Write a bioimage.io model package folder (and optionally ``<out_dir>.zip``).

    Parameters
    ----------
    model : InstanceUNet
        The network (any device; exported from a CPU copy in eval mode).
    out_dir : str or os.PathLike
        The package folder; created, files in it are overwritten.
    name, description, version : str, optional
        ``rdf.yaml`` fields (default description: the network and its post-processing;
        version: the hts version).
    authors, maintainers : list of dict, optional
        ``{"name": ..., "affiliation": ..., "github_user": ...}``; default author "hts developers",
        no maintainers (a maintainer needs a ``github_user``, which online validation looks up).
    cite : list of dict, optional
        ``{"text": ..., "doi": ... or "url": ...}`` entries added to :data:`CITE` (e.g. the
        Instance-U-Net paper's DOI).
    rpn_outputs : bool, optional
        Declare the RPN objectness and offset maps as outputs two and three (models with an RPN).
    card : str, optional
        Markdown on training data and metrics for the README; default: the shipped model's
        card summary when ``model`` holds the shipped weights, else a note that none was given.
    test_image : (H, W) ndarray, optional
        Raw test image, sides multiples of 16 (default :func:`example_image`).
    make_zip : bool, optional
        Also write ``<out_dir>.zip`` (files at its root, the zoo's upload format).

    Returns
    -------
    pathlib.Path
        The package folder (``rdf.yaml`` inside it).

    Raises
    ------
    HtsError
        A test image that is not 2D with sides multiples of 16.
    """
    import yaml  # PyYAML (installed with Dask; imported here only, hts.model imports no Dask)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = _cpu_copy(model)
    rpn = rpn_outputs and net.config.rpn
    raw = example_image(net) if test_image is None else np.asarray(test_image, np.float32)
    if raw.ndim != 2 or raw.shape[0] % STRIDE or raw.shape[1] % STRIDE or 0 in raw.shape:
        raise HtsError(f"test image must be 2D with sides multiples of {STRIDE}, got shape {raw.shape}")
    wrapper = ZooNetwork(net, rpn).eval()
    x = torch.from_numpy(scale_range(raw)[None, None])
    with torch.no_grad(), warnings.catch_warnings():
        # torch >= 2.11 deprecates torch.jit; TorchScript is still the zoo's PyTorch format
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        traced = torch.jit.trace(wrapper, x, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        (out / WEIGHTS_FILE).write_bytes(buf.getvalue())
        result = torch.jit.load(out / WEIGHTS_FILE)(x)  # test outputs come from the file as written
    outputs = list(result) if isinstance(result, tuple) else [result]
    import tifffile

    np.save(out / TEST_INPUT, raw[None, None])
    tifffile.imwrite(out / SAMPLE_FILES["image"], raw)
    for tid, tensor in zip(OUTPUT_IDS, outputs):
        np.save(out / TEST_FILES[tid], tensor.numpy().astype(np.float32))
        tifffile.imwrite(out / SAMPLE_FILES[tid], tensor.numpy()[0].squeeze(0) if tid == "foreground" else tensor.numpy()[0])
    _render_cover(scale_range(raw), outputs[0][0, 0].numpy(), out / COVER)
    shipped = _is_shipped(net)
    (out / README).write_text(_readme(net, rpn, card if card is not None else _card(shipped), out / WEIGHTS_FILE))
    rdf = _rdf(net, rpn, raw.shape, out, name=name, description=description, authors=authors,
               maintainers=maintainers, cite=cite, version=version)
    dumper = type("NoAliases", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
    (out / "rdf.yaml").write_text(yaml.dump(rdf, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100))
    if make_zip:
        write_zip(out, out.with_suffix(".zip"))
    return out


def write_zip(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Zip a package folder's files at the archive root (``rdf.yaml`` first); returns ``path``."""
    folder, path = Path(folder), Path(path)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    names.sort(key=lambda n: n != "rdf.yaml")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in names:
            zf.write(folder / n, arcname=n)
    return path


def validate_bioimageio(source: str | os.PathLike, perform_io_checks: bool = True):
    """Validate a package (folder, ``rdf.yaml`` or zip) with ``bioimageio.spec``.

    With ``perform_io_checks`` the local files are read and their sha256 and the test
    tensors' shapes checked; a package from :func:`export_bioimageio` with the default
    authors and cite holds no URLs or GitHub users, so nothing is looked up online.

    Parameters
    ----------
    source : str or os.PathLike
        The package folder, its ``rdf.yaml`` or its zip.
    perform_io_checks : bool, optional
        As ``bioimageio.spec.load_description``.

    Returns
    -------
    bioimageio.spec.ValidationSummary
        ``.status`` is ``"valid-format"`` (or ``"passed"``) when valid; ``.format()`` prints it.

    Raises
    ------
    HtsError
        When ``bioimageio.spec`` is not installed (``pip install "hts[bioimageio]"``).
    """
    try:
        from bioimageio.spec import load_description
    except ImportError:
        raise HtsError('validating a bioimage.io package needs bioimageio.spec: pip install "hts[bioimageio]"') from None
    source = Path(source)
    if source.is_dir():
        source = source / "rdf.yaml"
    return load_description(source, perform_io_checks=perform_io_checks).validation_summary


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (what ``rdf.yaml`` records)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cpu_copy(model: InstanceUNet) -> InstanceUNet:
    net = InstanceUNet(model.config)
    net.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    net.inference = dict(model.inference)
    return net.eval()


def _is_shipped(net: InstanceUNet) -> bool:
    """True when ``net`` holds the shipped default weights that :data:`SHIPPED_SHA256` names."""
    from hts.model.pretrained import default_model, default_model_path

    card = default_model_path().with_suffix(".json")
    if not card.is_file() or json.loads(card.read_text()).get("sha256") != SHIPPED_SHA256:
        return False
    ref = default_model()
    if ref.config != net.config:
        return False
    state = ref.state_dict()
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def _file(out: Path, name: str) -> dict[str, str]:
    return {"source": name, "sha256": sha256_file(out / name)}


def _rdf(net: InstanceUNet, rpn: bool, shape: tuple[int, int], out: Path, *, name, description, authors,
         maintainers, cite, version) -> dict[str, Any]:
    from hts import __version__

    k = net.config.num_anchors
    space = {"size": {"min": STRIDE, "step": STRIDE}}
    ref = {"tensor_id": "image"}
    outputs = [{
        "id": "foreground", "description": "U-Net foreground (nucleus) probability, softmax of 2 classes",
        "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["foreground"]},
                 {"type": "space", "id": "y", "size": {**ref, "axis_id": "y"}},
                 {"type": "space", "id": "x", "size": {**ref, "axis_id": "x"}}],
        "test_tensor": _file(out, TEST_OUTPUT), "sample_tensor": _file(out, SAMPLE_FILES["foreground"]),
        "data": {"type": "float32", "range": [0.0, 1.0]},
    }]
    if rpn:
        maps = {"rpn_objectness": ("RPN object probability per anchor on the stride-16 grid",
                                   [f"anchor{a}" for a in range(k)], {"type": "float32", "range": [0.0, 1.0]}),
                "rpn_deltas": ("RPN box offsets (tx, ty, tw, th) per anchor on the stride-16 grid",
                               [f"anchor{a}_{c}" for a in range(k) for c in ("tx", "ty", "tw", "th")],
                               {"type": "float32"})}
        for tid, (text, channels, data) in maps.items():
            outputs.append({
                "id": tid, "description": text,
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": channels},
                         {"type": "space", "id": "y", "scale": float(STRIDE), "size": {**ref, "axis_id": "y"}},
                         {"type": "space", "id": "x", "scale": float(STRIDE), "size": {**ref, "axis_id": "x"}}],
                "test_tensor": _file(out, TEST_FILES[tid]), "sample_tensor": _file(out, SAMPLE_FILES[tid]), "data": data,
            })
    n_params = sum(p.numel() for p in net.parameters())
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description or (
            "Instance-U-Net (U-Net with a shared-encoder Region Proposal Network) for 2D fluorescence nuclei. "
            "The weights give the foreground probability" + (" and the RPN anchor maps" if rpn else "")
            + "; instance labels need hts's post-processing (RPN proposals + NMS, box centroids as watershed "
            "markers, size rules), documented in the README and done by hts.segment."),
        "version": version or __version__,
        "authors": authors or [{"name": "hts developers"}],
        **({"maintainers": maintainers} if maintainers else {}),
        "cite": CITE + list(cite or []),
        "license": "BSD-3-Clause",
        "tags": TAGS,
        "covers": [_file(out, COVER)],
        "documentation": _file(out, README),
        "timestamp": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "inputs": [{
            "id": "image",
            "description": "raw 2D fluorescence nucleus image, resampled so nuclei are "
                           + (f"{net.config.diameter:g} px across" if net.config.diameter else "at the training scale"),
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["nuclei"]},
                     {"type": "space", "id": "y", **space}, {"type": "space", "id": "x", **space}],
            "test_tensor": _file(out, TEST_INPUT), "sample_tensor": _file(out, SAMPLE_FILES["image"]),
            "data": {"type": "float32"},
            "preprocessing": [{"id": "scale_range", "kwargs": {
                "axes": ["y", "x"], "min_percentile": PERCENTILES[0], "max_percentile": PERCENTILES[1], "eps": EPS}}],
        }],
        "outputs": outputs,
        "weights": {"torchscript": {
            **_file(out, WEIGHTS_FILE), "pytorch_version": torch.__version__.split("+")[0],
            "comment": "torch.jit.trace of hts.model.export.ZooNetwork (any multiple of 16 px)"}},
        "training_data": {
            "type": "dataset", "format_version": "0.3.0", "name": "DSB2018 (BBBC038) stage-1 fluorescence nuclei",
            "authors": [{"name": "Broad Bioimage Benchmark Collection"}],
            "tags": ["nuclei", "fluorescence-light-microscopy", "2d", "dsb2018", "bbbc038"],
            "description": "Fluorescence images of the 2018 Data Science Bowl (Broad Bioimage Benchmark Collection "
                           "BBBC038), community-corrected annotations; CC0.",
            "cite": [CITE[0]], "license": "CC0-1.0"},
        "config": {
            "bioimageio": {
                "architecture_type": "Instance-U-Net",
                "modality": "fluorescence microscopy",
                "target_structure": ["nuclei"],
                "task": "instance segmentation (with hts post-processing)",
                "model_parameter_count": int(n_params),
            },
            "hts": {"model_config": net.config.to_dict(), "inference": dict(net.inference), "stride": STRIDE,
                    "postprocessing": "hts.engine.pipeline.watershed_prediction (hts.segment)"},
        },
    }


def _render_cover(image: np.ndarray, fg: np.ndarray, path: Path) -> None:
    """A 2:1 PNG: the normalised test input beside the foreground probability."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=80)
    FigureCanvasAgg(fig)
    for i, (a, cmap, title) in enumerate(((np.clip(image, 0, 1), "gray", "input (normalised)"),
                                          (fg, "magma", "foreground probability"))):
        ax = fig.add_axes((i / 2, 0, 0.5, 0.92))
        ax.imshow(a, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        fig.text(i / 2 + 0.25, 0.955, title, ha="center", va="center", fontsize=11)
    fig.savefig(path, format="png")


def _card(shipped: bool) -> str:
    if not shipped:
        return ("No model card was given for these weights (`export_bioimageio(card=...)`); see the "
                "checkpoint's `meta` (training options, validation history) written by `hts train`.\n")
    return SHIPPED_CARD


SHIPPED_CARD = f"""\
Summary of `hts/model/weights/MODEL_CARD.md` for the shipped checkpoint `default.pt`
(sha256 `{SHIPPED_SHA256}`).

- Training data: DSB2018 / BBBC038 stage-1 fluorescence images, community-corrected annotations
  (CC0): 433 images with 18,990 nuclei for training, 54 images with 1,952 nuclei for selection
  (checkpoint, thresholds and size rule were chosen on them). No synthetic data.
- Recipe: variant IU-BCE/Dice (weighted BCE, w0 = 10, sigma = 5 px, + soft Dice + RPN losses),
  width 16, anchors 16/32/64 px x ratios 0.5/1/2; images resampled to a 32 px median nucleus,
  mirrors, scale 0.8-1.2, rotation 0-360 degrees, 256 px crops, batch 8, percentile normalisation
  (1, 99.8); Adam 1e-4 to step 4,500, then linear decay to 0 at step 7,500; seed 0; 3.2 h on 2 CPU cores.
- Command: `hts train --data dsb2018_fluo_train.npz --val dsb2018_fluo_val.npz --out runs/iu16e.pt
  --variant IU-BCE/Dice --width 16 --steps 7500 --decay-from 4500 --val-every 500`, then
  `scripts/tune_postprocess.py` and `scripts/ship_model.py --fg-threshold 0.85 --score-threshold 0.5`.
- Validation (54 images, hts post-processing, diameter known / estimated): AP@0.5 0.860 / 0.834,
  DSB score 0.659 / 0.647, AJI 0.836 / 0.830, mean IU 0.932 / 0.930, instance error 0.277 / 0.296,
  relative count error 0.079 / 0.075. RPN centroid recall: 94.2% of nuclei hold a proposal centroid,
  89.5% exactly one.
- Known limits: trained on fluorescence nuclei only; touching nuclei without a marker of their own
  merge, a nucleus with two markers is cut in two; bright debris over more than ~1% of an image
  pulls the normalisation range up (hts leaves saturated and most debris pixels out of it,
  `scale_range` does not).
"""


def _readme(net: InstanceUNet, rpn: bool, card: str, weights: Path) -> str:
    c, inf = net.config, net.inference
    diameter = f"{c.diameter:g} px" if c.diameter else "the training data's native scale"
    rpn_out = (f"""
2. `rpn_objectness` `(1, {c.num_anchors}, H/16, W/16)`: object probability of anchor `a` centred at pixel
   `((j + 0.5) * 16, (i + 0.5) * 16)` (x, y) of feature cell `(i, j)`; anchors: base {c.anchor_base:g} px x
   scales {list(c.scales)} x aspect ratios (h / w) {list(c.aspect_ratios)}, scale-major
   (`hts.model.anchors.cell_anchors`).
3. `rpn_deltas` `(1, {4 * c.num_anchors}, H/16, W/16)`: Faster R-CNN offsets `(tx, ty, tw, th)` of each
   anchor (channel `4a + i`; `hts.model.boxes.BoxCoder`, weights 1).
""" if rpn else "")
    return f"""# hts Instance-U-Net: fluorescence nuclei

A U-Net whose encoder is shared with a Region Proposal Network (RPN); in the
`hts` package the RPN box centroids seed a watershed that
separates touching nuclei. This package holds the **network only**: the instance
labels need the post-processing below, which `hts.segment` does.

## Input
`image` `(batch, channel, y, x)` = `(1, 1, H, W)` float32, one 2D fluorescence
nucleus channel; H and W any multiple of 16 (min 16).

- Scale: resample the image so its median nucleus is **{diameter}** across (the
  model's canonical diameter; `hts.segment(image, diameter=...)` does this, and
  estimates the diameter when it is not given). Not expressible in `rdf.yaml`.
- Normalisation (declared as preprocessing `scale_range`, axes y and x, percentiles
  1 and 99.8): `(x - p1) / (p99.8 - p1)` per image, as `hts.engine.preprocess.normalize`.
  hts also leaves saturated pixels and bright debris out of the percentiles; on
  clean images the two agree (the test input is such an image).

## Outputs
1. `foreground` `(1, 1, H, W)`: foreground probability (softmax of the U-Net's
   background / foreground logits).{rpn_out}
## Post-processing (in hts, not in the weights)
1. RPN proposals: decode the offsets on the anchors, clip to the image, drop boxes
   under 2 px, keep object probability >= {inf.get("score_threshold", 0.5):g}, NMS at IoU 0.3
   (`hts.model.rpn.proposals`).
2. Markers: the box centroids `((x1 + x2) / 2, (y1 + y2) / 2)`.
3. Mask: foreground probability >= {inf.get("fg_threshold", 0.5):g}; marker-based watershed on the
   distance transform of the mask (`hts.engine.watershed`).
4. Size rules: watershed slivers under 10% of the median nucleus area merge into their
   neighbour; isolated objects under max(5% of that area, 25 px) are noise.
5. Large images: 448 px tiles with 128 px overlap, blended; labels resampled back to
   the input's size.

```python
import hts
labels = hts.segment(image, diameter=None)  # the shipped model, all of the above
```

## Training and validation
{card}
## Files
- `{weights.name}`: TorchScript (`torch.jit.trace` of `hts.model.export.ZooNetwork`),
  sha256 `{sha256_file(weights)}`.
- `test_input.npy` (a synthetic image at the canonical diameter, camera units) and the
  test outputs (`test_*.npy`, from these weights); the same as TIFF (`sample_*.tif`);
  `cover.png`; `rdf.yaml`.

## License
Code and weights: BSD-3-Clause (the hts project). Training data: DSB2018 / BBBC038, CC0.
"""
