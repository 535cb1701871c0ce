"""The Python API: ``hts.segment(image) -> labels``."""

from __future__ import annotations

import os

import numpy as np
import torch

from hts.checkpoint import load_model
from hts.infer import predict
from hts.model import InstanceUNet
from hts.preprocess import check_image, normalize
from hts.pretrained import default_model
from hts.scale import estimate_diameter, scale_factor
from hts.watershed import instance_labels


def resolve_model(model: InstanceUNet | str | os.PathLike | None) -> InstanceUNet:
    """A model object from ``None`` (the shipped default), a checkpoint path, or a model."""
    if model is None:
        return default_model()
    if isinstance(model, InstanceUNet):
        return model
    return load_model(model)[0]


def segment(
    image: np.ndarray,
    model: InstanceUNet | str | os.PathLike | None = None,
    *,
    diameter: float | None = None,
    device: str | torch.device | None = None,
    threshold: float = 0.5,
    min_size: int = 0,
) -> np.ndarray:
    """Segment the nuclei of one 2D fluorescence image.

    ``image (H, W)`` of any integer or float dtype (normalised per image by
    percentiles); ``model`` is a model, a checkpoint path, or ``None`` for the
    shipped default. ``diameter``: median nucleus diameter in px; the image is
    resampled so nuclei match the model's canonical diameter; None estimates
    it (:func:`hts.scale.estimate_diameter`). Returns uint32 labels of the
    same shape, 0 = background, 1..N = nuclei. A model with RPN uses its box
    centroids as watershed markers (the Instance-U-Net); a plain U-Net uses
    distance-transform peaks.
    """
    arr = check_image(image)
    net = resolve_model(model)
    scale = 1.0
    if net.config.diameter is not None:
        scale = scale_factor(net.config.diameter, diameter if diameter is not None else estimate_diameter(arr))
    pred = predict(net, normalize(arr), device=device, scale=scale)
    boxes = pred.boxes if net.config.rpn else None
    return instance_labels(pred.prob, boxes, threshold=threshold, min_size=min_size)
