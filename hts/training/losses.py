"""Segmentation losses of the paper: U-Net weight map, weighted BCE, soft Dice.

The RPN losses live with the RPN (:func:`hts.model.rpn.rpn_loss`). The loss
variants of the paper's Table 1 are named in :data:`VARIANTS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

W0 = 10.0
SIGMA = 5.0  # px
DICE_EPS = 1e-6


@dataclass(frozen=True)
class Variant:
    """A Table 1 configuration: RPN on/off and the segmentation loss terms.

    Parameters
    ----------
    rpn : bool
        Train the RPN head (its losses also train the shared encoder).
    bce, dice : bool
        Use the weighted BCE and/or the soft Dice term.
    """

    rpn: bool
    bce: bool
    dice: bool


VARIANTS: dict[str, Variant] = {
    "U-BCE": Variant(rpn=False, bce=True, dice=False),
    "IU-BCE": Variant(rpn=True, bce=True, dice=False),
    "IU-Dice": Variant(rpn=True, bce=False, dice=True),
    "IU-BCE/Dice": Variant(rpn=True, bce=True, dice=True),
}


def segmentation_target(labels: np.ndarray) -> np.ndarray:
    """Binary foreground target ``(H, W)`` uint8 from instance labels.

    Where two nuclei touch, the pixels of the lower label that are
    8-adjacent to a higher label become background: a 1-px line that keeps
    touching nuclei apart in the target, as the cells of the U-Net paper were.
    The paper is silent on this; the watershed layer fills nothing back, so
    it costs about one pixel row per touching border.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Instance labels, 0 = background.

    Returns
    -------
    (H, W) uint8 ndarray
        1 = foreground, 0 = background or separating line.
    """
    labels = np.asarray(labels)
    padded = np.pad(labels, 1)
    h, w = labels.shape
    border = np.zeros(labels.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                border |= (nb > labels) & (labels > 0)
    return ((labels > 0) & ~border).astype(np.uint8)


def weight_map(labels: np.ndarray, target: np.ndarray | None = None, w0: float = W0, sigma: float = SIGMA) -> np.ndarray:
    """U-Net weight map ``w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``, float32 ``(H, W)``.

    ``d1``/``d2`` are the Euclidean distances (px) from each pixel to the
    nearest and second-nearest nucleus (0 inside a nucleus), so the term is
    largest on the gaps and touching borders between nuclei; it is 0 where
    fewer than two nuclei exist. ``w_c`` balances the classes of ``target``
    (default: :func:`segmentation_target`): ``N / (2 N_c)`` for a class with
    ``N_c`` of the ``N`` pixels, so it averages 1; 1 everywhere when one class
    is absent. Distances are computed in a window around each nucleus, wide
    enough that the skipped term is below ``1e-3 * w0``.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Instance labels, 0 = background.
    target : (H, W) ndarray, optional
        Binary target for the class balance; default :func:`segmentation_target`.
    w0 : float, optional
        Weight of the border term (paper: 10).
    sigma : float, optional
        Width of the border term, px (paper: 5).

    Returns
    -------
    (H, W) float32 ndarray
        Per-pixel loss weights, >= 0 (mean about 1 plus the border term).
    """
    labels = np.asarray(labels)
    if target is None:
        target = segmentation_target(labels)
    fg = target > 0
    n, n_fg = fg.size, int(fg.sum())
    if 0 < n_fg < n:
        wc = np.where(fg, n / (2.0 * n_fg), n / (2.0 * (n - n_fg))).astype(np.float32)
    else:
        wc = np.ones(labels.shape, np.float32)
    margin = int(math.ceil(sigma * math.sqrt(2 * math.log(1e3)))) + 1
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    slices = ndimage.find_objects(labels)
    if sum(s is not None for s in slices) < 2:
        return wc
    h, w = labels.shape
    for i, s in enumerate(slices, start=1):
        if s is None:
            continue
        win = (
            slice(max(s[0].start - margin, 0), min(s[0].stop + margin, h)),
            slice(max(s[1].start - margin, 0), min(s[1].stop + margin, w)),
        )
        dist = ndimage.distance_transform_edt(labels[win] != i).astype(np.float32)
        a, b = d1[win], d2[win]
        b[...] = np.minimum(b, np.maximum(a, dist))
        a[...] = np.minimum(a, dist)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return (wc + np.nan_to_num(border, nan=0.0, posinf=0.0)).astype(np.float32)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted log loss of the 2-class softmax: ``mean_x w(x) * -log p_{l(x)}(x)``.

    Parameters
    ----------
    logits : (B, 2, H, W) tensor
        (background, foreground) logits.
    target : (B, H, W) tensor
        Classes in {0, 1}.
    weight : (B, H, W) float tensor
        Per-pixel weights (:func:`weight_map`).

    Returns
    -------
    scalar float32 tensor
    """
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return (weight * ce).mean()


def soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Soft Dice loss ``1 - 2 sum(p y) / (sum p^2 + sum y^2 + eps)`` over the batch.

    Parameters
    ----------
    logits : (B, 2, H, W) tensor
        ``p`` is their softmax foreground probability.
    target : (B, H, W) tensor
        ``y`` in {0, 1}.
    eps : float, optional
        Keeps the ratio finite for an empty batch.

    Returns
    -------
    scalar float32 tensor
        In [0, 1].
    """
    p = logits.float().softmax(1)[:, 1]
    y = target.float()
    return 1 - 2 * (p * y).sum() / ((p * p).sum() + (y * y).sum() + eps)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, variant: Variant) -> torch.Tensor:
    """The segmentation term of ``variant``: weighted BCE, Dice or their sum.

    Parameters
    ----------
    logits, target, weight
        As in :func:`weighted_bce`.
    variant : Variant
        Which terms to add.

    Returns
    -------
    scalar float32 tensor
    """
    loss = logits.new_zeros((), dtype=torch.float32)
    if variant.bce:
        loss = loss + weighted_bce(logits, target, weight)
    if variant.dice:
        loss = loss + soft_dice(logits, target)
    return loss
