"""The engine's composition: one in-memory image through normalise -> resample -> tiled inference -> watershed.

The stage functions live in their modules (:mod:`hts.engine.preprocess`,
:mod:`hts.engine.scale`, :mod:`hts.engine.infer`, :mod:`hts.engine.watershed`);
this module chains them for one checked image, as the public API
(:func:`hts.segment`), evaluation and the Dask tasks of :mod:`hts.screen` all do.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from hts.engine.infer import Prediction, fg_threshold, predict, proposal_params
from hts.engine.preprocess import as_numpy, normalize
from hts.engine.scale import scale_factor
from hts.engine.watershed import instance_labels, size_params
from hts.errors import HtsError
from hts.model import InstanceUNet
from hts.model.checkpoint import load_model
from hts.model.pretrained import default_model

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


def check_lazy(image) -> None:
    """Shape and dtype checks for a zarr/dask array without reading it (pixels are checked per block)."""
    shape, dtype = tuple(image.shape), np.dtype(image.dtype)
    if len(shape) != 2:
        raise HtsError(f"image: expected a 2D (height, width) array, got shape {shape}")
    if 0 in shape:
        raise HtsError(f"image: image is empty (shape {shape})")
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise HtsError(f"image: dtype {dtype} is not a real numeric intensity type")


def central_crop(image, size: int = 2048) -> np.ndarray:
    h, w = image.shape
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return as_numpy(image[y0 : y0 + size, x0 : x0 + size])
