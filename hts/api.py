"""The Python API: ``hts.segment(image) -> labels`` for images of any size."""

from __future__ import annotations

import os

import numpy as np
import torch
import zarr

from hts.blockwise import BLOCK, segment_blocks
from hts.checkpoint import load_model
from hts.errors import HtsError
from hts.infer import Prediction, fg_threshold, predict, proposal_params
from hts.model import InstanceUNet
from hts.preprocess import as_numpy, check_image, intensity_range, normalize
from hts.pretrained import default_model
from hts.scale import estimate_diameter, scale_factor
from hts.stitch import aligned_blocks
from hts.watershed import instance_labels, size_params

IN_MEMORY_MAX_PIXELS = 4096 * 4096  # larger numpy images go block by block
HALO_NETWORK_PX = 160  # block halo in network pixels: tile overlap plus two canonical nuclei


def resolve_model(model: InstanceUNet | str | os.PathLike | None) -> InstanceUNet:
    """A model object from ``None`` (the shipped default), a checkpoint path, or a model."""
    if model is None:
        return default_model()
    if isinstance(model, InstanceUNet):
        return model
    return load_model(model)[0]


def segment_image(
    net: InstanceUNet,
    image: np.ndarray,
    diameter: float | None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    threshold: float | None = None,
    min_size: int | None = None,
    value_range: tuple[float, float] | None = None,
    use_rpn: bool | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, Prediction]:
    """One checked in-memory image through normalise -> resample -> tiled inference -> watershed layer.

    ``diameter`` (px) sets the resampling (None: as it is); ``use_rpn``
    chooses RPN-centroid markers (default: when the model has an RPN) or
    distance-transform peaks. Returns the uint32 labels and the raw prediction.
    """
    pred = infer_image(net, image, diameter, device=device, batch_size=batch_size, value_range=value_range,
                       progress=progress)
    return watershed_prediction(net, pred, diameter, threshold=threshold, min_size=min_size, use_rpn=use_rpn), pred


def infer_image(
    net: InstanceUNet,
    image: np.ndarray,
    diameter: float | None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    value_range: tuple[float, float] | None = None,
    progress: bool = False,
) -> Prediction:
    """The network stage of :func:`segment_image`: normalised, resampled, tiled inference."""
    scale = scale_factor(net.config.diameter, diameter) if net.config.diameter is not None else 1.0
    return predict(net, normalize(image, value_range=value_range), proposal_params(net), device=device, scale=scale,
                   batch_size=batch_size, progress=progress)


def watershed_prediction(
    net: InstanceUNet,
    pred: Prediction,
    diameter: float | None,
    *,
    threshold: float | None = None,
    min_size: int | None = None,
    use_rpn: bool | None = None,
) -> np.ndarray:
    """The watershed stage of :func:`segment_image`: uint32 labels from a prediction."""
    use_rpn = net.config.rpn if use_rpn is None else use_rpn
    sizes = size_params(diameter)
    if min_size is not None:  # an explicit size both merges slivers and drops noise
        sizes["min_size"] = sizes["noise_size"] = min_size
    fg = fg_threshold(net) if threshold is None else threshold
    return instance_labels(pred.prob, pred.boxes if use_rpn else None, threshold=fg, **sizes)


def check_min_size(min_size: int | None, name: str = "min_size") -> None:
    """Raise HtsError unless ``min_size`` is None or a whole number of px >= 0."""
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0):
        raise HtsError(f"{name} must be a whole number of px >= 0, got {min_size!r}")


def _check_lazy(image) -> None:
    """Shape and dtype checks for a zarr/dask array without reading it (pixels are checked per block)."""
    shape, dtype = tuple(image.shape), np.dtype(image.dtype)
    if len(shape) != 2:
        raise HtsError(f"image: expected a 2D (height, width) array, got shape {shape}")
    if 0 in shape:
        raise HtsError(f"image: image is empty (shape {shape})")
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise HtsError(f"image: dtype {dtype} is not a real numeric intensity type")


def _central_crop(image, size: int = 2048) -> np.ndarray:
    h, w = image.shape
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return as_numpy(image[y0 : y0 + size, x0 : x0 + size])


def segment(
    image,
    model: InstanceUNet | str | os.PathLike | None = None,
    diameter: float | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    *,
    out: zarr.Array | str | os.PathLike | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    progress: bool = False,
) -> np.ndarray | zarr.Array:
    """Segment the nuclei of a 2D fluorescence image of any size.

    ``image (H, W)``: a numpy array, or a zarr/dask array (read block by
    block, never whole), of any integer or float dtype (normalised per image,
    or per block for large images, by percentiles). ``model``: a model, a
    checkpoint path, or None for the shipped default. ``diameter``: median
    nucleus diameter in px; the image is resampled so nuclei match the
    model's canonical diameter; None estimates it (on a central crop of large
    images). ``device``: torch device (default CUDA when available).
    ``batch_size``: 448x448 tiles per forward pass (default 4).

    Returns uint32 labels of the same shape, 0 = background, 1..N = nuclei.
    A numpy image up to 4096x4096 px is segmented in one piece and returned
    as numpy; zarr/dask input, larger numpy images, or any call with ``out``
    (a Zarr array or path) go block by block, and the labels are written to
    ``out`` and that Zarr array is returned (a numpy array when ``out`` is None). A model with RPN
    uses its box centroids as watershed markers (the Instance-U-Net); a plain
    U-Net uses distance-transform peaks. ``threshold``: foreground
    probability; default the model's setting selected on validation data
    (0.5 for a model without one). Objects under ``min_size`` px are
    merged into the nucleus they touch, or dropped as noise when isolated;
    default: slivers under 10% of the median nucleus area merge, and objects
    under 5% of it or under 25 px are dropped (:func:`hts.watershed.size_params`).
    """
    net = resolve_model(model)
    lazy = not isinstance(image, np.ndarray)
    if lazy and not hasattr(image, "shape"):
        image = check_image(image)
        lazy = False
    if lazy:
        _check_lazy(image)
    else:
        image = check_image(image)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise HtsError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_min_size(min_size)
    if diameter is None and net.config.diameter is not None:
        diameter = estimate_diameter(_central_crop(image) if lazy else image)
    def run(checked: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
        labels, _ = segment_image(net, checked, diameter, device=device, batch_size=batch_size or 4,
                                  threshold=threshold, min_size=min_size, value_range=value_range, progress=progress)
        return labels

    if not lazy and out is None and image.size <= IN_MEMORY_MAX_PIXELS:
        return run(image)
    diameter, block, halo = aligned_blocks(diameter, net.config.diameter, BLOCK, HALO_NETWORK_PX)
    value_range = intensity_range(image)
    return segment_blocks(image, lambda r: run(check_image(r, "image block"), value_range), halo=halo, out=out,
                          block=block, progress=progress)
