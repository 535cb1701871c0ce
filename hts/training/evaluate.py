"""Evaluate a model (or saved predictions) on an annotated data set."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from hts.engine.infer import fg_threshold
from hts.engine.pipeline import infer_image, segment_image
from hts.engine.scale import median_diameter
from hts.engine.watershed import component_labels, size_params
from hts.model import InstanceUNet
from hts.training.data import Dataset
from hts.training.metrics import evaluate_dataset


def predict_dataset(
    model: InstanceUNet,
    images: list[np.ndarray],
    device: str | torch.device | None = None,
    progress: bool = False,
    markers: str = "auto",
    diameters: list[float | None] | None = None,
    tta: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labels and foreground probabilities for each image (one tiled inference per image).

    Parameters
    ----------
    model : InstanceUNet
        Any mode (an eval-mode copy runs).
    images : list of (H, W) ndarray
        Raw intensity images (normalised here).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    progress : bool, optional
        A tqdm bar over the images.
    markers : {"auto", "rpn", "distance", "none"}, optional
        ``"rpn"``: box centroids; ``"distance"``: distance-transform peaks;
        ``"auto"``: RPN when the model has one; ``"none"``: no watershed, the
        connected components of the foreground (Table 1's rows without the
        watershed layer).
    diameters : list of float or None, optional
        Median nucleus diameter (px) of each image, used to resample it to
        the model's canonical diameter; None for an image uses it as it is.
    tta : {1, 4, 8}, optional
        Test-time augmentation (:func:`hts.engine.tta.predict_tta`); 1: none.

    Returns
    -------
    labels : list of (H, W) uint32 ndarray
    probs : list of (H, W) float32 ndarray
        Foreground probabilities in [0, 1].
    """
    use_rpn = model.config.rpn if markers == "auto" else markers == "rpn"
    diameters = diameters or [None] * len(images)
    labels, probs = [], []
    for image, diameter in tqdm(list(zip(images, diameters)), desc="predict", unit="img", disable=not progress, leave=False):
        if markers == "none":
            pred = infer_image(model, image, diameter, device=device, tta=tta)
            lab = component_labels(pred.prob, fg_threshold(model), size_params(diameter)["min_size"])
        else:
            lab, pred = segment_image(model, image, diameter, device=device, use_rpn=use_rpn, tta=tta)
        labels.append(lab)
        probs.append(pred.prob)
    return labels, probs


def evaluate_model(
    model: InstanceUNet,
    data: Dataset,
    device: str | torch.device | None = None,
    progress: bool = False,
    markers: str = "auto",
) -> dict:
    """All metrics of :func:`hts.training.metrics.evaluate_dataset`, ``rmse`` included.

    Each image is resampled by its ground-truth median nucleus diameter (the
    setting of a screen whose magnification is known).

    Parameters
    ----------
    model : InstanceUNet
        As in :func:`predict_dataset`.
    data : Dataset
        Images and ground-truth labels.
    device, progress, markers
        As in :func:`predict_dataset`.

    Returns
    -------
    dict
        Metric name to float or int, JSON-ready.
    """
    diameters = [median_diameter(lb) for lb in data.labels]
    labels, probs = predict_dataset(model, data.images, device, progress, markers, diameters)
    return evaluate_dataset(data.labels, labels, probs)
