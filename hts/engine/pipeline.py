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

from hts.engine.infer import Prediction, fg_threshold, proposal_params
from hts.engine.preprocess import as_numpy, normalize
from hts.engine.scale import scale_factor
from hts.engine.tta import predict_tta
from hts.engine.watershed import instance_labels, size_params
from hts.errors import HtsError
from hts.model import InstanceUNet
from hts.model.checkpoint import load_model
from hts.model.pretrained import default_model

HALO_NETWORK_PX = 160  # block halo in network pixels: tile overlap plus two canonical nuclei


def resolve_model(model: InstanceUNet | str | os.PathLike | None) -> InstanceUNet:
    """A model object from ``None`` (the shipped default), a checkpoint path, or a model.

    Parameters
    ----------
    model : InstanceUNet or str or os.PathLike or None
        None: :func:`hts.model.pretrained.default_model`; a path: a checkpoint
        loaded with :func:`hts.model.checkpoint.load_model`; a model: itself.

    Returns
    -------
    InstanceUNet
    """
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
    tta: int = 1,
) -> tuple[np.ndarray, Prediction]:
    """One checked in-memory image through normalise -> resample -> tiled inference -> watershed layer.

    Parameters
    ----------
    net : InstanceUNet
        The model (see :func:`resolve_model`).
    image : (H, W) ndarray
        Intensities, already checked (:func:`hts.engine.preprocess.check_image`).
    diameter : float or None
        Median nucleus diameter, px; sets the resampling to the model's
        canonical diameter and the size thresholds. None: used as it is.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    batch_size : int, optional
        Tiles per forward pass.
    threshold : float, optional
        Foreground probability threshold; default the model's validated one.
    min_size : int, optional
        Area (px^2) under which objects are merged or dropped; default from
        ``diameter`` (:func:`hts.engine.watershed.size_params`).
    value_range : tuple of float, optional
        ``(lo, hi)`` intensity range for the normalisation, image units;
        default the image's own percentiles.
    use_rpn : bool, optional
        RPN-centroid markers (default when the model has an RPN) or
        distance-transform peaks.
    progress : bool, optional
        A progress bar over the tiles.
    tta : {1, 4, 8}, optional
        Test-time augmentation: the network output averaged over 4 flips or 8
        flips and quarter turns (:func:`hts.engine.tta.predict_tta`), at 4 or
        8 times the network time; 1 (default): none.

    Returns
    -------
    labels : (H, W) uint32 ndarray
        0 = background, nuclei 1..N.
    prediction : Prediction
        The raw network output in the image's frame.
    """
    pred = infer_image(net, image, diameter, device=device, batch_size=batch_size, value_range=value_range,
                       progress=progress, tta=tta)
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
    tta: int = 1,
) -> Prediction:
    """The network stage of :func:`segment_image`: normalised, resampled, tiled inference.

    Split out so evaluation can run other post-processing on the same output.

    Parameters
    ----------
    net, image, diameter, device, batch_size, value_range, progress, tta
        As in :func:`segment_image`.

    Returns
    -------
    Prediction
        In the frame of ``image``.
    """
    scale = scale_factor(net.config.diameter, diameter) if net.config.diameter is not None else 1.0
    return predict_tta(net, normalize(image, value_range=value_range), proposal_params(net), device=device,
                       scale=scale, tta=tta, batch_size=batch_size, progress=progress)


def watershed_prediction(
    net: InstanceUNet,
    pred: Prediction,
    diameter: float | None,
    *,
    threshold: float | None = None,
    min_size: int | None = None,
    use_rpn: bool | None = None,
) -> np.ndarray:
    """The watershed stage of :func:`segment_image`: labels from a prediction.

    Parameters
    ----------
    net : InstanceUNet
        Supplies the validated threshold and whether it has an RPN.
    pred : Prediction
        From :func:`infer_image`.
    diameter, threshold, min_size, use_rpn
        As in :func:`segment_image`.

    Returns
    -------
    (H, W) uint32 ndarray
        0 = background, nuclei 1..N.
    """
    use_rpn = net.config.rpn if use_rpn is None else use_rpn
    sizes = size_params(diameter)
    if min_size is not None:  # an explicit size both merges slivers and drops noise
        sizes["min_size"] = sizes["noise_size"] = min_size
    fg = fg_threshold(net) if threshold is None else threshold
    return instance_labels(pred.prob, pred.boxes if use_rpn else None, threshold=fg, **sizes)


def check_min_size(min_size: int | None, name: str = "min_size") -> None:
    """Raise HtsError unless ``min_size`` is None or a whole number of px^2 >= 0.

    Parameters
    ----------
    min_size : int or None
        The value to check (bool is refused).
    name : str, optional
        Parameter name for the message.

    Raises
    ------
    HtsError
    """
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0):
        raise HtsError(f"{name} must be a whole number of px >= 0, got {min_size!r}")


def check_lazy(image) -> None:
    """Shape and dtype checks for a zarr/dask array without reading it (pixels are checked per block).

    Parameters
    ----------
    image : array_like
        Anything with ``shape`` and ``dtype``.

    Raises
    ------
    HtsError
        Unless ``image`` is a non-empty 2D array of a real numeric dtype.
    """
    shape, dtype = tuple(image.shape), np.dtype(image.dtype)
    if len(shape) != 2:
        raise HtsError(f"image: expected a 2D (height, width) array, got shape {shape}")
    if 0 in shape:
        raise HtsError(f"image: image is empty (shape {shape})")
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise HtsError(f"image: dtype {dtype} is not a real numeric intensity type")


def central_crop(image, size: int = 2048) -> np.ndarray:
    """The central ``size x size`` px of ``image`` (all of a side shorter than ``size``), read into memory.

    A sample for estimating the nucleus diameter of an image too large to read whole.

    Parameters
    ----------
    image : (H, W) array_like
        numpy, zarr or dask array; only the crop is read.
    size : int, optional
        Crop side, px.

    Returns
    -------
    (min(H, size), min(W, size)) ndarray
    """
    h, w = image.shape
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return as_numpy(image[y0 : y0 + size, x0 : x0 + size])
