"""Box utilities in torch: IoU, the Faster R-CNN box coder, NMS, boxes from labels.

Boxes are ``(x1, y1, x2, y2)`` float tensors in pixels of the input image,
``x`` along columns and ``y`` along rows, with ``x2``/``y2`` exclusive (a box
around pixel columns 3..5 is ``x1=3, x2=6``), so width = x2 - x1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Largest log-scale the decoder accepts (as torchvision): exp(4.135) ~ 62.5x.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of boxes.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` ``(x1, y1, x2, y2)`` px; an inverted side counts as 0.

    Returns
    -------
    torch.Tensor
        ``(N,)`` areas in px², the dtype of ``boxes``.
    """
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of two sets of boxes.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(N, 4)`` and ``(M, 4)`` float ``(x1, y1, x2, y2)`` px.

    Returns
    -------
    torch.Tensor
        ``(N, M)`` IoU in [0, 1].
    """
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=1e-9)


def box_centroids(boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Centres ``((x1+x2)/2, (y1+y2)/2)`` of boxes: the watershed markers of the RPN.

    Parameters
    ----------
    boxes : torch.Tensor or numpy.ndarray
        ``(N, 4)`` float ``(x1, y1, x2, y2)`` px.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        ``(N, 2)`` ``(x, y)`` px, of the same kind and float dtype as ``boxes``.
    """
    stack = torch.stack if isinstance(boxes, torch.Tensor) else np.stack
    return stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), 1)


def centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres and sizes of boxes.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` float ``(x1, y1, x2, y2)`` px.

    Returns
    -------
    cx, cy, w, h : torch.Tensor
        Each ``(N,)`` px.
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


class BoxCoder:
    """Faster R-CNN box parameterisation ``(tx, ty, tw, th)`` relative to anchors.

    ``tx = (x - xa) / wa``, ``ty = (y - ya) / ha``, ``tw = log(w / wa)``,
    ``th = log(h / ha)`` with centres ``x, y`` and sizes ``w, h``; ``weights``
    scale the four terms as in torchvision (default 1).
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> None:
        self.weights = weights

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """The offsets that turn ``anchors`` into ``boxes``.

        Parameters
        ----------
        boxes, anchors : torch.Tensor
            ``(N, 4)`` float ``(x1, y1, x2, y2)`` px, paired row by row;
            anchor sizes must be positive.

        Returns
        -------
        torch.Tensor
            ``(N, 4)`` ``(tx, ty, tw, th)`` (dimensionless).
        """
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = centre_size(anchors)
        bx, by, bw, bh = centre_size(boxes)
        return torch.stack(
            (wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)),
            dim=1,
        )

    def decode(self, offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes from offsets applied to anchors (the inverse of :meth:`encode`).

        Parameters
        ----------
        offsets : torch.Tensor
            ``(N, 4)`` ``(tx, ty, tw, th)``; ``tw``, ``th`` are clipped at
            :data:`BBOX_XFORM_CLIP`.
        anchors : torch.Tensor
            ``(N, 4)`` float ``(x1, y1, x2, y2)`` px.

        Returns
        -------
        torch.Tensor
            ``(N, 4)`` float ``(x1, y1, x2, y2)`` px.
        """
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = centre_size(anchors)
        dx, dy = offsets[:, 0] / wx, offsets[:, 1] / wy
        dw = (offsets[:, 2] / ww).clamp(max=BBOX_XFORM_CLIP)
        dh = (offsets[:, 3] / wh).clamp(max=BBOX_XFORM_CLIP)
        cx, cy = ax + dx * aw, ay + dy * ah
        w, h = aw * torch.exp(dw), ah * torch.exp(dh)
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=1)


def overlapping_pairs(boxes: torch.Tensor, iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(i, j)``, ``i != j``, of ``(N, 4)`` boxes with IoU > ``iou_threshold``.

    Sparse: boxes are sorted by centre row and each is compared only with
    the boxes whose centre rows are within the largest box height, so the
    cost grows with N times the boxes per image row, not N^2 (a slide holds
    hundreds of thousands of nuclei).

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` float ``(x1, y1, x2, y2)`` px.
    iou_threshold : float
        Pairs with IoU strictly above it are returned.

    Returns
    -------
    i, j : torch.Tensor
        ``(P,)`` int64 box indices; each pair appears in both orders.
    """
    n = boxes.shape[0]
    cy = box_centroids(boxes)[:, 1]
    order = torch.argsort(cy)
    cy_sorted = cy[order]
    reach = (boxes[:, 3] - boxes[:, 1]).max().clamp(min=0)
    hi = torch.searchsorted(cy_sorted, cy_sorted + reach, right=True)
    start = torch.arange(n, device=boxes.device) + 1  # pairs (a, b) with a < b in sorted order
    counts = (hi - start).clamp(min=0)
    a = torch.repeat_interleave(torch.arange(n, device=boxes.device), counts)
    offsets = torch.arange(int(counts.sum()), device=boxes.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    b = start[a] + offsets
    i, j = order[a], order[b]
    lt = torch.maximum(boxes[i, :2], boxes[j, :2])
    rb = torch.minimum(boxes[i, 2:], boxes[j, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    iou = inter / (box_area(boxes[i]) + box_area(boxes[j]) - inter).clamp(min=1e-9)
    keep = iou > iou_threshold
    i, j = i[keep], j[keep]
    return torch.cat((i, j)), torch.cat((j, i))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.3) -> torch.Tensor:
    """Greedy non-maximum suppression; indices of kept boxes by decreasing score.

    A box is suppressed when its IoU with a higher-scoring kept box is
    strictly greater than ``iou_threshold`` (the torchvision rule; ties in
    score keep the lower index first). Pure torch for the geometry
    (:func:`overlapping_pairs`), then one sweep in score order over the
    sparse overlap lists.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(N, 4)`` float ``(x1, y1, x2, y2)`` px.
    scores : torch.Tensor
        ``(N,)`` float, higher is better.
    iou_threshold : float
        Suppression IoU in [0, 1].

    Returns
    -------
    torch.Tensor
        ``(K,)`` int64 indices into ``boxes``, on ``boxes``' device.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=order.device)
    i, j = overlapping_pairs(boxes.float(), iou_threshold)
    later = rank[j] > rank[i]  # only a higher-ranked box can suppress a lower one
    src, dst = rank[i[later]].cpu().numpy(), rank[j[later]].cpu().numpy()
    sort = np.argsort(src, kind="stable")
    src, dst = src[sort], dst[sort]
    ptr = np.searchsorted(src, np.arange(n + 1))
    suppressed = np.zeros(n, bool)
    keep = []
    for r in range(n):
        if suppressed[r]:
            continue
        keep.append(r)
        suppressed[dst[ptr[r] : ptr[r + 1]]] = True
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(N, 4)`` float32 ``(x1, y1, x2, y2)`` of the instances of a label image.

    Boxes are ordered by label id; ids absent from the image are skipped.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer labels, 0 = background.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` float32 ``(x1, y1, x2, y2)`` px, ``x2``/``y2`` exclusive.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.max(initial=0) == 0:
        return np.zeros((0, 4), np.float32)
    slices = ndimage.find_objects(labels)
    out = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices if s is not None]
    return np.asarray(out, np.float32).reshape(-1, 4)
