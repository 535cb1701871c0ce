"""The Python API: ``hts.segment(image) -> labels`` for images of any size."""

from __future__ import annotations

import os

import numpy as np
import torch
import zarr

from hts.engine.blocks import BLOCK, segment_blocks
from hts.engine.pipeline import (
    HALO_NETWORK_PX,
    central_crop,
    check_lazy,
    check_min_size,
    resolve_model,
    segment_image,
)
from hts.engine.preprocess import check_image, intensity_range
from hts.engine.size import estimate_diameter
from hts.engine.stitch import aligned_blocks
from hts.engine.tta import check_tta
from hts.errors import HtsError
from hts.model import InstanceUNet

IN_MEMORY_MAX_PIXELS = 4096 * 4096  # larger numpy images go block by block


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
    tta: int = 1,
) -> np.ndarray | zarr.Array:
    """Segment the nuclei of a 2D fluorescence image of any size.

    ``image (H, W)``: a numpy array, or a zarr/dask array (read block by
    block, never whole), of any integer or float dtype (normalised per image,
    or per block for large images, by percentiles). ``model``: a model, a
    checkpoint path, or None for the shipped default. ``diameter``: median
    nucleus diameter in px; the image is resampled so nuclei match the
    model's canonical diameter; None lets the network measure it
    (:func:`hts.engine.size.estimate_diameter`; on a central 2048-px crop of
    large images). ``device``: torch device (default CUDA when available).
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
    under 5% of it or under 25 px are dropped (:func:`hts.engine.watershed.size_params`).
    ``tta``: test-time augmentation, 1 (default: none), 4 (the network output
    averaged over the image's flips) or 8 (flips and 90-degree rotations), at
    4 or 8 times the network time (:mod:`hts.engine.tta`; gain and cost: docs/tta.md).
    """
    net = resolve_model(model)
    lazy = not isinstance(image, np.ndarray)
    if lazy and not hasattr(image, "shape"):
        image = check_image(image)
        lazy = False
    if lazy:
        check_lazy(image)
    else:
        image = check_image(image)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise HtsError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_min_size(min_size)
    check_tta(tta)
    if diameter is None and net.config.diameter is not None:
        diameter = estimate_diameter(net, central_crop(image) if lazy else image).diameter
    def run(checked: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
        labels, _ = segment_image(net, checked, diameter, device=device, batch_size=batch_size or 4,
                                  threshold=threshold, min_size=min_size, value_range=value_range, progress=progress,
                                  tta=tta)
        return labels

    if not lazy and out is None and image.size <= IN_MEMORY_MAX_PIXELS:
        return run(image)
    diameter, block, halo = aligned_blocks(diameter, net.config.diameter, BLOCK, HALO_NETWORK_PX)
    value_range = intensity_range(image)
    return segment_blocks(image, lambda r: run(check_image(r, "image block"), value_range), halo=halo, out=out,
                          block=block, progress=progress)
