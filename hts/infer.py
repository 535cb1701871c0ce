"""Inference: one normalised image through the model, foreground probability and RPN boxes out.

This is the single-pass form (the whole image in one forward pass, padded to
a multiple of 16). Plain torch and numpy; no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hts.model import InstanceUNet
from hts.model.network import STRIDE
from hts.model.rpn import ProposalParams, proposals
from hts.scale import rescale, resize_to


@dataclass
class Prediction:
    """Model output for one image, in that image's pixel frame.

    ``prob (H, W)`` float32 foreground probability; ``boxes (N, 4)`` float32
    RPN proposals ``(x1, y1, x2, y2)`` after NMS and ``scores (N,)`` float32
    (both empty for a model without RPN).
    """

    prob: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def pad_to_multiple(image: np.ndarray, multiple: int = STRIDE) -> np.ndarray:
    """Zero-pad ``(H, W)`` at the bottom/right to the next multiple of ``multiple`` per side."""
    h, w = image.shape
    ph, pw = -h % multiple, -w % multiple
    return np.pad(image, ((0, ph), (0, pw))) if ph or pw else image


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.inference_mode()
def predict(
    model: InstanceUNet,
    image: np.ndarray,
    params: ProposalParams = ProposalParams(),
    device: str | torch.device | None = None,
    scale: float = 1.0,
) -> Prediction:
    """Run ``model`` on one normalised ``(H, W)`` float image (see :func:`hts.preprocess.normalize`).

    ``scale`` resamples the image before the network (see
    :func:`hts.scale.scale_factor`); probabilities and boxes come back in the
    input's pixel frame.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    scaled = rescale(image, scale)
    h, w = scaled.shape
    x = torch.from_numpy(np.ascontiguousarray(pad_to_multiple(scaled), np.float32))[None, None].to(dev)
    out = model(x)
    prob = resize_to(out["logits"].float().softmax(1)[0, 1, :h, :w].cpu().numpy(), image.shape)
    if "rpn_logits" not in out:
        empty = np.zeros((0, 4), np.float32)
        return Prediction(prob, empty, np.zeros(0, np.float32))
    (boxes, scores), = proposals(out["rpn_logits"], out["rpn_deltas"], out["anchors"], (h, w), params)
    sy, sx = image.shape[0] / h, image.shape[1] / w
    boxes = boxes.cpu().numpy() * np.array([sx, sy, sx, sy], np.float32)
    return Prediction(prob, boxes, scores.cpu().numpy())
