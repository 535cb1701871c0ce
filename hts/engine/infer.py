"""Inference: a normalised image of any size through the model in overlapping tiles.

Tiles (:mod:`hts.engine.tile`) go through the network in batches; foreground
probabilities are blended with linear ramps over the overlaps into one
seamless map; the RPN proposals of all tiles are merged by ownership (a tile
keeps the boxes whose centroid lies in its core) followed by NMS across
tiles, so a nucleus on a seam gets exactly one marker. Plain torch and
numpy; no Dask.
"""

from __future__ import annotations

import copy
import functools
import os
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from tqdm import tqdm

from hts.engine.scale import rescale, resize_to
from hts.engine.tile import EDGE_MARGIN, OVERLAP, TILE, blend_ramp, tile_grid
from hts.errors import HtsError
from hts.model import InstanceUNet
from hts.model.boxes import box_centroids, nms
from hts.model.rpn import ProposalParams, proposals


@dataclass
class Prediction:
    """Model output for one image, in that image's pixel frame.

    Attributes
    ----------
    prob : (H, W) float32 ndarray
        Foreground probability in [0, 1].
    boxes : (N, 4) float32 ndarray
        RPN proposals ``(x1, y1, x2, y2)`` after NMS, px (empty without an RPN).
    scores : (N,) float32 ndarray
        Their object probabilities (empty without an RPN).
    """

    prob: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def proposal_params(model: InstanceUNet) -> ProposalParams:
    """Proposal settings of ``model``: its validated RPN score threshold, else the default 0.5.

    Parameters
    ----------
    model : InstanceUNet
        Its ``inference["score_threshold"]`` is used when present.

    Returns
    -------
    ProposalParams
        Defaults apart from ``score_threshold``.
    """
    return ProposalParams(score_threshold=model.inference.get("score_threshold", ProposalParams.score_threshold))


def fg_threshold(model: InstanceUNet) -> float:
    """The threshold in [0, 1] on :attr:`Prediction.prob` that ``model`` was validated with
    (``model.inference["fg_threshold"]``), else 0.5."""
    return model.inference.get("fg_threshold", 0.5)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; a clear error for a bad or absent device.

    Parameters
    ----------
    device : str or torch.device or None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; None picks one.

    Returns
    -------
    torch.device

    Raises
    ------
    HtsError
        For a string torch cannot parse, or CUDA asked for but absent.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise HtsError(f"device: {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HtsError(f"device: {device} asked for, but torch {torch.__version__} sees no CUDA GPU")
    return device


def inference_model(model: InstanceUNet, device: torch.device) -> InstanceUNet:
    """An eval-mode copy for inference: BatchNorm folded into the convolutions, channels_last memory.

    Same outputs up to float rounding (~1e-5), in less time: folding
    BatchNorm removes one operation per convolution, and channels_last is faster on
    CPU and what cuDNN prefers on GPU (figures: docs/performance.md). The
    caller's model is not modified.

    Parameters
    ----------
    model : InstanceUNet
        Any mode; deep-copied.
    device : torch.device
        Where the copy goes.

    Returns
    -------
    InstanceUNet
        The fused eval-mode copy on ``device``.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[0], nn.Conv2d) \
                and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return fused.to(device).to(memory_format=torch.channels_last)


CPU_TILE = 1280  # the largest tile on CPU, network px: fewer, larger tiles repeat less overlap (docs/performance.md)


def default_tile(device: torch.device) -> int:
    """The largest tile side for ``device``, network px: the paper's 448 on a GPU, :data:`CPU_TILE` on a CPU.

    A GPU is fed batches of equal 448-px tiles; a CPU computes pixel by
    pixel, so there a tile repeats its 128-px overlap less the larger it
    is: a 2048-px field is 49 tiles of 448 px (2.2x its pixels) or 4 of
    1,104 px (1.16x).
    """
    return TILE if device.type == "cuda" else CPU_TILE


def tiles_per_pass(batch_size: int, tile_shape: tuple[int, int]) -> int:
    """Tiles per forward pass: ``batch_size`` counts 448-px tiles, so larger tiles go fewer at a time (>= 1)."""
    return max(1, batch_size * TILE * TILE // (tile_shape[0] * tile_shape[1]))


_PREPARED: "weakref.WeakKeyDictionary[InstanceUNet, tuple[tuple, InstanceUNet]]" = weakref.WeakKeyDictionary()


def prepared_model(model: InstanceUNet, device: torch.device) -> InstanceUNet:
    """:func:`inference_model` of ``model``, made once per model, device and weights and then reused.

    A worker segments field after field with one model: folding and copying
    it each time cost about 0.1 s per field (issue 20). The key holds every
    parameter's and buffer's version counter, which torch bumps on each
    in-place change (an optimiser step, ``load_state_dict``), so a model
    trained between two calls is prepared again.

    Parameters
    ----------
    model : InstanceUNet
        Not modified.
    device : torch.device
        Where the prepared copy lives.

    Returns
    -------
    InstanceUNet
        The fused eval-mode copy (shared: do not modify it).
    """
    key = (str(device), tuple(t._version for t in (*model.parameters(), *model.buffers())))
    hit = _PREPARED.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fused = inference_model(model, device)
    _PREPARED[model] = (key, fused)
    return fused


@functools.cache
def cpu_bf16() -> bool:
    """Whether CPU inference runs under bf16 autocast: where the CPU has bf16 instructions and ``HTS_CPU_BF16`` is not 0.

    oneDNN computes bf16 convolutions natively on CPUs with AVX512-BF16 or
    AMX, about twice as fast as fp32 (docs/performance.md); elsewhere bf16
    would be emulated and slower, so fp32 stays. The GPU path always uses
    bf16. ``HTS_CPU_BF16=0`` in the environment keeps fp32 (read once per process).
    """
    if os.environ.get("HTS_CPU_BF16", "1").strip() == "0" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the query
        return False


def precision(device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: the arithmetic of the network's forward passes on ``device`` (run provenance)."""
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_bf16()) else "fp32"


def _forward(model: InstanceUNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch through the model in channels_last, under bf16 autocast where :func:`precision` says so."""
    x = x.contiguous(memory_format=torch.channels_last)
    if precision(x.device) == "bf16":
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return model(x)
    return model(x)


@torch.inference_mode()
def predict_tiles(
    model: InstanceUNet,
    image: np.ndarray,
    params: ProposalParams = ProposalParams(),
    device: torch.device | None = None,
    tile: int | None = None,
    overlap: int = OVERLAP,
    batch_size: int = 4,
    progress: bool = False,
    margin: int = EDGE_MARGIN,
) -> Prediction:
    """Tiled prediction of a normalised image already in the network's frame.

    Probabilities are blended over the tile overlaps; each tile keeps the
    proposals whose centroid lies in its core, then NMS across tiles removes
    a nucleus proposed from both sides of a core boundary.

    Parameters
    ----------
    model : InstanceUNet
        An :func:`inference_model` copy, on ``device``.
    image : (H, W) float32 ndarray
        Normalised and resampled to the model's canonical diameter.
    params : ProposalParams, optional
        RPN proposal settings.
    device : torch.device, optional
        Default: :func:`resolve_device` (CUDA when available).
    tile : int, optional
        The largest tile side, px; default :func:`default_tile` of the device.
        Each axis uses the shortest tiles that need no more of them
        (:func:`hts.engine.tile.fitted_tile`).
    overlap, margin : int, optional
        Minimum tile overlap and blend edge margin, px (see
        :func:`hts.engine.tile.blend_ramp`).
    batch_size : int, optional
        448-px tiles per forward pass; larger tiles go fewer at a time
        (:func:`tiles_per_pass`).
    progress : bool, optional
        A tqdm bar when there are at least 4 batches.

    Returns
    -------
    Prediction
        In the frame of ``image``.
    """
    dev = device or resolve_device(None)
    h, w = image.shape
    tiles, (th, tw) = tile_grid((h, w), tile or default_tile(dev), overlap)
    batch_size = tiles_per_pass(batch_size, (th, tw))
    weight = np.outer(blend_ramp(th, overlap, margin), blend_ramp(tw, overlap, margin)).astype(np.float32)
    prob_sum = np.zeros((h, w), np.float32)
    weight_sum = np.zeros((h, w), np.float32)
    all_boxes, all_scores = [], []
    batches = [tiles[i : i + batch_size] for i in range(0, len(tiles), batch_size)]
    for batch in tqdm(batches, desc="tiles", unit="batch", disable=not progress or len(batches) < 4, leave=False):
        x = np.zeros((len(batch), 1, th, tw), np.float32)
        for k, t in enumerate(batch):
            x[k, 0, : t.h, : t.w] = image[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        out = _forward(model, torch.from_numpy(x).to(dev))
        probs = out["logits"].float().softmax(1)[:, 1].cpu().numpy()
        for k, t in enumerate(batch):
            wk = weight[: t.h, : t.w]
            prob_sum[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] += probs[k, : t.h, : t.w] * wk
            weight_sum[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w] += wk
        if "rpn_logits" not in out:
            continue
        for k, (boxes, scores) in enumerate(proposals(out["rpn_logits"], out["rpn_deltas"], out["anchors"], (th, tw), params)):
            t = batch[k]
            boxes = boxes.float().cpu()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, t.w)  # a small image's tile has zero padding
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, t.h)
            cx, cy = box_centroids(boxes).unbind(1)
            y_lo, y_hi, x_lo, x_hi = t.core
            own = (cy + t.y0 >= y_lo) & (cy + t.y0 < y_hi) & (cx + t.x0 >= x_lo) & (cx + t.x0 < x_hi)
            all_boxes.append(boxes[own] + torch.tensor([t.x0, t.y0, t.x0, t.y0], dtype=torch.float32))
            all_scores.append(scores.float().cpu()[own])
    prob = prob_sum / weight_sum
    if not all_boxes:
        return Prediction(prob, np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    if len(tiles) > 1:  # one nucleus near a core boundary may be proposed by two tiles
        keep = nms(boxes, scores, params.nms_iou)
        boxes, scores = boxes[keep], scores[keep]
    return Prediction(prob, boxes.numpy(), scores.numpy())


def predict(
    model: InstanceUNet,
    image: np.ndarray,
    params: ProposalParams = ProposalParams(),
    device: str | torch.device | None = None,
    scale: float = 1.0,
    tile: int | None = None,
    overlap: int = OVERLAP,
    batch_size: int = 4,
    progress: bool = False,
    margin: int = EDGE_MARGIN,
) -> Prediction:
    """Run ``model`` on one normalised image, in overlapping tiles at the model's scale.

    The image is resampled by ``scale`` so its nuclei have the canonical
    diameter the model was trained at; probabilities and boxes come back in
    the input's pixel frame.

    Parameters
    ----------
    model : InstanceUNet
        Not modified (its :func:`prepared_model` copy runs).
    image : (H, W) float ndarray
        Normalised (see :func:`hts.engine.preprocess.normalize`).
    params : ProposalParams, optional
        RPN proposal settings (see :func:`proposal_params`).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    scale : float, optional
        Resampling factor, network px per input px (see
        :func:`hts.engine.scale.scale_factor`).
    tile, overlap, margin : int, optional
        Largest tile side (default :func:`default_tile` of the device),
        minimum overlap and blend edge margin, px of the network frame (see
        :func:`predict_tiles`); a ``tile`` at least as large as the image
        gives a single pass.
    batch_size : int, optional
        448-px tiles per forward pass (see :func:`tiles_per_pass`).
    progress : bool, optional
        Show a tqdm bar over the tile batches.

    Returns
    -------
    Prediction
        ``prob (H, W)``, boxes and scores in the input's frame.
    """
    dev = resolve_device(device)
    model = prepared_model(model, dev)
    scaled = rescale(image, scale)
    pred = predict_tiles(model, scaled, params, dev, tile, overlap, batch_size, progress, margin)
    if scaled.shape == image.shape:
        return pred
    sy, sx = image.shape[0] / scaled.shape[0], image.shape[1] / scaled.shape[1]
    boxes = pred.boxes * np.array([sx, sy, sx, sy], np.float32)
    return Prediction(resize_to(pred.prob, image.shape), boxes, pred.scores)
