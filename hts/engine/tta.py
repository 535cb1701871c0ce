"""Test-time augmentation: the tiled prediction averaged over flips and 90-degree rotations.

Each dihedral transform of the normalised image goes through
:func:`hts.engine.infer.predict`; its foreground probability is mapped back by
the inverse transform and the maps are averaged; its RPN boxes are mapped back
exactly (flips and quarter turns take an ``(x1, y1, x2, y2)`` box to a box)
and the boxes of all transforms are merged by the NMS of the proposals, so one
nucleus found in every view keeps one marker; a merged box is kept when more
than half of the views have a box overlapping it (IoU above the NMS
threshold), so a split or a speck seen in one view only adds no marker.
``tta=1`` is plain
:func:`~hts.engine.infer.predict`; ``4``: the flips (identity, left-right,
up-down, both); ``8``: the flips and the quarter turns, all 8 symmetries of
the square. Gain and cost on the validation split: docs/tta.md. Plain numpy
and torch; no Dask.
"""

from __future__ import annotations

import numpy as np
import torch

from hts.engine.infer import Prediction, predict
from hts.errors import HtsError
from hts.model import InstanceUNet
from hts.model.boxes import nms, overlapping_pairs
from hts.model.rpn import ProposalParams

# A transform (flip, k): mirror left-right when ``flip``, then ``k`` counterclockwise quarter turns (np.rot90).
TRANSFORMS: dict[int, tuple[tuple[bool, int], ...]] = {
    1: ((False, 0),),
    4: ((False, 0), (True, 0), (True, 2), (False, 2)),  # identity, left-right, up-down, both
    8: tuple((flip, k) for k in range(4) for flip in (False, True)),
}
TTA_CHOICES = tuple(TRANSFORMS)
DEFAULT_PARAMS = ProposalParams()


def check_tta(tta: int, name: str = "tta") -> None:
    """Raise HtsError unless ``tta`` is 1, 4 or 8.

    Parameters
    ----------
    tta : int
        Number of transforms averaged.
    name : str, optional
        Parameter name for the message.

    Raises
    ------
    HtsError
    """
    if isinstance(tta, bool) or tta not in TRANSFORMS:
        raise HtsError(f"{name} must be 1 (none), 4 (flips) or 8 (flips and rotations), got {tta!r}")


def transform(a: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """Apply the transform ``(flip, k)`` to a 2D array (a view).

    Parameters
    ----------
    a : (H, W) ndarray
    flip : bool
        Mirror left-right first.
    k : int
        Counterclockwise quarter turns after it.

    Returns
    -------
    ndarray
        ``(H, W)`` for even ``k``, ``(W, H)`` for odd.
    """
    return np.rot90(a[:, ::-1] if flip else a, k)


def invert(a: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """Undo :func:`transform` ``(flip, k)`` on a 2D array (a view): ``invert(transform(a)) == a`` exactly."""
    b = np.rot90(a, -k)
    return b[:, ::-1] if flip else b


def _flip_boxes(b: np.ndarray, w: float) -> np.ndarray:
    """Boxes under a left-right mirror of a frame ``w`` px wide."""
    return np.stack((w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]), 1)


def _turn_boxes(b: np.ndarray, w: float) -> np.ndarray:
    """Boxes under one counterclockwise quarter turn of a frame ``w`` px wide: ``(x, y) -> (y, w - x)``."""
    return np.stack((b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]), 1)


def transform_boxes(boxes: np.ndarray, shape: tuple[int, int], flip: bool, k: int) -> np.ndarray:
    """Boxes of an image of ``shape`` mapped into the frame of :func:`transform` ``(flip, k)``.

    Parameters
    ----------
    boxes : (N, 4) ndarray
        ``(x1, y1, x2, y2)`` px, ``x2``/``y2`` exclusive (as :mod:`hts.model.boxes`).
    shape : tuple of int
        ``(H, W)`` of the image the boxes are in.
    flip, k
        The transform.

    Returns
    -------
    (N, 4) float32 ndarray
        The same boxes in the transformed image.
    """
    (h, w), b = shape, np.asarray(boxes, np.float64).reshape(-1, 4)
    if flip:
        b = _flip_boxes(b, w)
    for _ in range(k % 4):
        b, (h, w) = _turn_boxes(b, w), (w, h)
    return b.astype(np.float32)


def invert_boxes(boxes: np.ndarray, shape: tuple[int, int], flip: bool, k: int) -> np.ndarray:
    """Undo :func:`transform_boxes`: boxes of the transformed image back in the frame of the original.

    Parameters
    ----------
    boxes : (N, 4) ndarray
        ``(x1, y1, x2, y2)`` px in the transformed image.
    shape : tuple of int
        ``(H, W)`` of the original image (not of the transformed one).
    flip, k
        The transform.

    Returns
    -------
    (N, 4) float32 ndarray
    """
    h, w = shape if k % 2 == 0 else shape[::-1]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    for _ in range(-k % 4):
        b, (h, w) = _turn_boxes(b, w), (w, h)
    return (_flip_boxes(b, w) if flip else b).astype(np.float32)


def predict_tta(
    model: InstanceUNet,
    image: np.ndarray,
    params: ProposalParams = DEFAULT_PARAMS,
    device: str | torch.device | None = None,
    scale: float = 1.0,
    tta: int = 1,
    **kwargs,
) -> Prediction:
    """:func:`hts.engine.infer.predict` averaged over ``tta`` flips/rotations of ``image``.

    Parameters
    ----------
    model, image, params, device, scale
        As in :func:`~hts.engine.infer.predict`.
    tta : {1, 4, 8}, optional
        1: a single pass, the same result as ``predict``; 4: the flips; 8: the
        flips and quarter turns. Costs ``tta`` passes.
    **kwargs
        ``tile``, ``overlap``, ``batch_size``, ``progress``, ``margin`` of ``predict``.

    Returns
    -------
    Prediction
        The mean probability and the NMS-merged boxes of all passes that more
        than half of the passes support (:func:`merge_boxes`), in the input's frame.

    Raises
    ------
    HtsError
        For a ``tta`` other than 1, 4 or 8.
    """
    check_tta(tta)
    if tta == 1:
        return predict(model, image, params, device, scale, **kwargs)
    prob = np.zeros(image.shape, np.float32)
    boxes, scores = [], []
    for flip, k in TRANSFORMS[tta]:
        pred = predict(model, np.ascontiguousarray(transform(image, flip, k)), params, device, scale, **kwargs)
        prob += invert(pred.prob, flip, k)
        boxes.append(invert_boxes(pred.boxes, image.shape, flip, k))
        scores.append(pred.scores.astype(np.float32))
    prob /= len(TRANSFORMS[tta])
    merged, merged_scores = merge_boxes(boxes, scores, params.nms_iou)
    return Prediction(prob, merged, merged_scores)


def merge_boxes(boxes: list[np.ndarray], scores: list[np.ndarray], iou: float) -> tuple[np.ndarray, np.ndarray]:
    """The proposals of several views of one image as one set: NMS, then a majority vote.

    Parameters
    ----------
    boxes, scores : list of ndarray
        Per view, ``(N_v, 4)`` float32 boxes in one common frame and their ``(N_v,)`` scores.
    iou : float
        The NMS threshold of the proposals (:attr:`ProposalParams.nms_iou`);
        a view supports a kept box when one of its boxes overlaps it at IoU above it.

    Returns
    -------
    boxes : (K, 4) float32 ndarray
        The NMS-kept boxes supported by more than half of the views, by decreasing score.
    scores : (K,) float32 ndarray
    """
    boxes_t, scores_t = torch.from_numpy(np.concatenate(boxes)), torch.from_numpy(np.concatenate(scores))
    if not len(boxes_t):
        return boxes_t.numpy(), scores_t.numpy()
    view = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor([len(b) for b in boxes]))
    keep = nms(boxes_t, scores_t, iou)
    hit = torch.zeros((len(boxes_t), len(boxes)), dtype=torch.bool)
    hit[keep, view[keep]] = True
    i, j = overlapping_pairs(boxes_t, iou)
    hit[i, view[j]] = True
    keep = keep[hit[keep].sum(1) > len(boxes) / 2]
    return boxes_t.numpy()[keep.numpy()], scores_t.numpy()[keep.numpy()]
