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
) -> Prediction:
    """Run ``model`` on one normalised ``(H, W)`` float image (see :func:`hts.preprocess.normalize`)."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    h, w = image.shape
    x = torch.from_numpy(np.ascontiguousarray(pad_to_multiple(image), np.float32))[None, None].to(dev)
    out = model(x)
    prob = out["logits"].float().softmax(1)[0, 1, :h, :w].cpu().numpy()
    if "rpn_logits" not in out:
        empty = np.zeros((0, 4), np.float32)
        return Prediction(prob, empty, np.zeros(0, np.float32))
    (boxes, scores), = proposals(out["rpn_logits"], out["rpn_deltas"], out["anchors"], (h, w), params)
    return Prediction(prob, boxes.cpu().numpy(), scores.cpu().numpy())
