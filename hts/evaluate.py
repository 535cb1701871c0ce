"""Evaluate a model (or saved predictions) on an annotated data set."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from hts.data import Dataset
from hts.infer import predict
from hts.metrics import evaluate_dataset
from hts.model import InstanceUNet
from hts.preprocess import normalize
from hts.watershed import instance_labels


def predict_dataset(
    model: InstanceUNet,
    images: list[np.ndarray],
    device: str | torch.device | None = None,
    progress: bool = False,
    markers: str = "auto",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labels and foreground probabilities for each image (single pass per image).

    ``markers``: ``"rpn"`` (box centroids), ``"distance"`` (distance-transform
    peaks) or ``"auto"`` (RPN when the model has one).
    """
    use_rpn = model.config.rpn if markers == "auto" else markers == "rpn"
    labels, probs = [], []
    for image in tqdm(images, desc="predict", unit="img", disable=not progress, leave=False):
        pred = predict(model, normalize(image), device=device)
        labels.append(instance_labels(pred.prob, pred.boxes if use_rpn else None))
        probs.append(pred.prob)
    return labels, probs


def evaluate_model(
    model: InstanceUNet,
    data: Dataset,
    device: str | torch.device | None = None,
    progress: bool = False,
    markers: str = "auto",
) -> dict:
    """All metrics of :func:`hts.metrics.evaluate_dataset`, ``rmse`` included."""
    labels, probs = predict_dataset(model, data.images, device, progress, markers)
    return evaluate_dataset(data.labels, labels, probs)
