"""Segmentation metrics for nucleus instance label images (numpy in, numpy out).

Parameters named ``gt`` and ``pred`` (not repeated below) are always 2D
integer label images of equal shape ``(H, W)``, ground truth and prediction
(0 = background, 1..N = instances; ids need not be sequential; any int
dtype); ``gt_fg``/``pred_fg`` are binary masks (bool or int, nonzero =
foreground), ``prob`` a float foreground probability in [0, 1]. Scalar
metrics return a Python float in [0, 1] (count error: >= 0). All instance
metrics are built on one sparse overlap table (:func:`match_instances`),
computed with ``np.unique`` over the pixels where both images are foreground.

Per-image metrics: DSB2018 average precision (a pair is a true positive when
IoU > t, strictly), the DSB score (mean AP over t = 0.50, 0.55, ..., 0.95),
F1, the aggregated Jaccard index (Kumar et al. 2017), panoptic quality,
relative count error, the instance error on touching nuclei, and pixel
metrics on binary foreground (pixel error, mean IU, RMSE). Aggregation over
a data set: :func:`evaluate_dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from hts.errors import HtsError

DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds of the DSB2018 score: 0.50, 0.55, ..., 0.95."""

REPORT_THRESHOLDS: tuple[float, ...] = DSB_THRESHOLDS[:-1]
"""Thresholds reported as ``ap_50`` ... ``ap_90`` by the evaluate functions."""


def _ap_key(t: float) -> str:
    return f"ap_{round(t * 100):02d}"  # 0.55 -> "ap_55"


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Return ``labels`` as a 2D non-negative integer array or raise HtsError."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise HtsError(f"{name}: expected a 2D label image, got {arr.ndim}D shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise HtsError(f"{name}: expected an integer label image, got dtype {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise HtsError(f"{name}: labels must be non-negative, got minimum {arr.min()}")
    return arr


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt = _check_labels(gt, "gt")
    pred = _check_labels(pred, "pred")
    if pred.shape != gt.shape:
        raise HtsError(f"pred: shape {pred.shape} differs from gt shape {gt.shape}")
    return gt, pred


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """Binary foreground as bool; accepts bool or integer arrays (nonzero = foreground)."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise HtsError(f"{name}: expected a 2D mask, got {arr.ndim}D shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise HtsError(f"{name}: expected a bool or integer mask, got dtype {arr.dtype}")
    return arr != 0


def _check_threshold(t: float, name: str = "t") -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise HtsError(f"{name}: IoU threshold must be in [0, 1], got {t}")
    return t


class _Overlap(NamedTuple):
    """Sparse gt/pred overlap table; pair arrays index into the id arrays."""

    gt_ids: np.ndarray  # (n_gt,) sorted nonzero gt labels
    pred_ids: np.ndarray  # (n_pred,) sorted nonzero pred labels
    area_gt: np.ndarray  # (n_gt,) int64 pixel counts
    area_pred: np.ndarray  # (n_pred,) int64 pixel counts
    pair_gt: np.ndarray  # (n_pairs,) int64 index into gt_ids
    pair_pred: np.ndarray  # (n_pairs,) int64 index into pred_ids
    pair_inter: np.ndarray  # (n_pairs,) int64 intersection in pixels
    pair_iou: np.ndarray  # (n_pairs,) float64 IoU

    @property
    def n_gt(self) -> int:
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    def dense_iou(self) -> np.ndarray:
        iou = np.zeros((self.n_gt, self.n_pred), dtype=np.float64)
        iou[self.pair_gt, self.pair_pred] = self.pair_iou
        return iou


def _ids_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids != 0
    return ids[keep], counts[keep].astype(np.int64)


def _overlap(gt: np.ndarray, pred: np.ndarray) -> _Overlap:
    """Build the overlap table from validated label images (one pass, no per-label masks)."""
    gt_ids, area_gt = _ids_areas(gt)
    pred_ids, area_pred = _ids_areas(pred)
    both = (gt != 0) & (pred != 0)
    g = np.searchsorted(gt_ids, gt[both]).astype(np.int64)
    p = np.searchsorted(pred_ids, pred[both]).astype(np.int64)
    codes, inter = np.unique(g * max(pred_ids.size, 1) + p, return_counts=True)
    pair_gt, pair_pred = np.divmod(codes, max(pred_ids.size, 1))
    inter = inter.astype(np.int64)
    union = area_gt[pair_gt] + area_pred[pair_pred] - inter
    iou = inter / union.astype(np.float64)
    return _Overlap(gt_ids, pred_ids, area_gt, area_pred, pair_gt, pair_pred, inter, iou)


def match_instances(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every gt/pred instance pair.

    Only overlapping pixels are visited, so the cost is one sort of the
    image, not n_gt * n_pred masks.

    Returns
    -------
    gt_ids, pred_ids : 1D ndarray
        Sorted nonzero labels of each image (dtype of the input).
    iou : (n_gt, n_pred) float64 ndarray
        IoU of ``gt_ids[i]`` and ``pred_ids[j]``; 0 where they do not overlap.
    """
    ov = _overlap(*_check_pair(gt, pred))
    return ov.gt_ids, ov.pred_ids, ov.dense_iou()


def reproduced(reference: np.ndarray, other: np.ndarray, ids: np.ndarray, iou_min: float = 0.9) -> np.ndarray:
    """For each label of ``reference`` in ``ids``: does ``other`` hold an instance at IoU >= ``iou_min`` with it?

    How two segmentations of the same image agree (tiled vs single pass,
    blocks vs whole image).

    Parameters
    ----------
    reference, other : (H, W) int ndarray (label images)
    ids : array_like of int
        Labels of ``reference`` to check; one absent from it is not reproduced.
    iou_min : float in [0, 1], optional

    Returns
    -------
    bool ndarray
        One entry per id, flattened.
    """
    ref_ids, _, iou = match_instances(reference, other)
    hit = dict(zip(ref_ids.tolist(), (iou >= _check_threshold(iou_min, "iou_min")).any(axis=1).tolist()))
    return np.array([hit.get(int(i), False) for i in np.asarray(ids).ravel()], bool)


def _n_true_positives(ov: _Overlap, t: float) -> int:
    """Number of one-to-one matched pairs with IoU > t.

    For t >= 0.5 each instance has at most one partner with IoU > t, so the
    count is direct; below 0.5 a maximum-cardinality assignment is solved.
    """
    hit = ov.pair_iou > t
    if t >= 0.5:
        return int(np.count_nonzero(hit))
    if not hit.any():
        return 0
    rows, r = np.unique(ov.pair_gt[hit], return_inverse=True)
    cols, c = np.unique(ov.pair_pred[hit], return_inverse=True)
    weight = np.zeros((rows.size, cols.size))
    weight[r, c] = 1.0
    ri, ci = linear_sum_assignment(weight, maximize=True)
    return int(weight[ri, ci].sum())


def _ap(ov: _Overlap, t: float) -> float:
    if ov.n_gt == 0 and ov.n_pred == 0:
        return 1.0
    tp = _n_true_positives(ov, t)
    return tp / (ov.n_gt + ov.n_pred - tp)  # TP / (TP + FP + FN)


def _f1(ov: _Overlap, t: float) -> float:
    if ov.n_gt == 0 and ov.n_pred == 0:
        return 1.0
    tp = _n_true_positives(ov, t)
    return 2 * tp / (ov.n_gt + ov.n_pred)  # 2TP / (2TP + FP + FN)


def _aji(ov: _Overlap) -> float:
    if ov.n_gt == 0 and ov.n_pred == 0:
        return 1.0
    # Best pred per gt: sort pairs by gt, then IoU descending, then pred index (ties -> lowest id).
    order = np.lexsort((ov.pair_pred, -ov.pair_iou, ov.pair_gt))
    g_sorted = ov.pair_gt[order]
    first = order[np.r_[True, g_sorted[1:] != g_sorted[:-1]]] if order.size else order
    bg, bp, binter = ov.pair_gt[first], ov.pair_pred[first], ov.pair_inter[first]
    c = int(binter.sum())
    u = int((ov.area_gt[bg] + ov.area_pred[bp] - binter).sum())
    unmatched_gt = np.ones(ov.n_gt, dtype=bool)
    unmatched_gt[bg] = False
    used = np.zeros(ov.n_pred, dtype=bool)
    used[bp] = True
    u += int(ov.area_gt[unmatched_gt].sum()) + int(ov.area_pred[~used].sum())
    return c / u


def _pq(ov: _Overlap) -> float:
    if ov.n_gt == 0 and ov.n_pred == 0:
        return 1.0
    hit = ov.pair_iou > 0.5
    tp = int(np.count_nonzero(hit))
    fp, fn = ov.n_pred - tp, ov.n_gt - tp
    # PQ = SQ * RQ = (sum IoU_TP / TP) * TP / (TP + FP/2 + FN/2)
    return float(ov.pair_iou[hit].sum()) / (tp + 0.5 * fp + 0.5 * fn)


def _count_rel_error(n_gt: int, n_pred: int) -> float:
    return abs(n_pred - n_gt) / max(n_gt, 1)


def average_precision(
    gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DSB_THRESHOLDS
) -> np.ndarray:
    """DSB2018 AP(t) = TP / (TP + FP + FN), a TP being a one-to-one pair with IoU > t.

    Parameters
    ----------
    thresholds : sequence of float in [0, 1], optional

    Returns
    -------
    (len(thresholds),) float64 ndarray
        1.0 at every threshold when both images are empty.
    """
    ts = [_check_threshold(t, "thresholds") for t in thresholds]
    ov = _overlap(*_check_pair(gt, pred))
    return np.array([_ap(ov, t) for t in ts], dtype=np.float64)


def dsb_score(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean of :func:`average_precision` over t = 0.50, 0.55, ..., 0.95 (DSB2018 score)."""
    return float(average_precision(gt, pred, DSB_THRESHOLDS).mean())


def f1(gt: np.ndarray, pred: np.ndarray, t: float = 0.5) -> float:
    """F1 = 2TP / (2TP + FP + FN) with TP = one-to-one pairs of IoU > t; 1.0 if both empty."""
    t = _check_threshold(t)
    return _f1(_overlap(*_check_pair(gt, pred)), t)


def aggregated_jaccard_index(gt: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard index of Kumar et al. 2017.

    Each gt instance takes the pred with the highest IoU among all preds
    (a pred may be taken by several gts): its intersection is added to C and
    its union to U; a gt overlapping no pred adds its area to U. Finally the
    area of every pred never taken is added to U. AJI = C / U; 1.0 if both
    images are empty, 0.0 if exactly one is.
    """
    return _aji(_overlap(*_check_pair(gt, pred)))


def panoptic_quality(gt: np.ndarray, pred: np.ndarray) -> float:
    """PQ = SQ * RQ with matches at IoU > 0.5 (Kirillov et al. 2019); 1.0 if both empty.

    SQ is the mean IoU of the matched pairs, RQ = TP / (TP + FP/2 + FN/2).
    """
    return _pq(_overlap(*_check_pair(gt, pred)))


def count_relative_error(gt: np.ndarray, pred: np.ndarray) -> float:
    """|n_pred - n_gt| / max(n_gt, 1), counting distinct nonzero labels."""
    gt, pred = _check_pair(gt, pred)
    return _count_rel_error(_ids_areas(gt)[0].size, _ids_areas(pred)[0].size)


_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # each 8-neighbour pair visited once


def touching_instances(labels: np.ndarray) -> np.ndarray:
    """Sorted ids of instances with a pixel 8-adjacent to a pixel of another nonzero label.

    Vectorised over four array shifts; returns an array of the input dtype.
    """
    lab = _check_labels(labels, "labels")
    h, w = lab.shape
    found = []
    for dy, dx in _SHIFTS:
        a = lab[: h - dy, max(-dx, 0) : w - max(dx, 0)]
        b = lab[dy:, max(dx, 0) : w - max(-dx, 0)]
        m = (a != 0) & (b != 0) & (a != b)
        found += [a[m], b[m]]
    return np.unique(np.concatenate(found))


def _instance_error(gt: np.ndarray, ov: _Overlap) -> tuple[int, int]:
    touching = touching_instances(gt)
    separated_ids = ov.gt_ids[np.unique(ov.pair_gt[ov.pair_iou > 0.5])]
    n_not = int(np.count_nonzero(~np.isin(touching, separated_ids)))
    return int(touching.size), n_not


def instance_error(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """Counts for the instance error on touching nuclei: ``(n_touching, n_not_separated)``.

    ``n_touching`` is the number of gt nuclei that touch another gt nucleus
    (:func:`touching_instances`, 8-connectivity). Such a nucleus is correctly
    separated when some predicted instance has IoU > 0.5 with it (IoU > 0.5
    makes the match one-to-one), so a merge of two equal nuclei (IoU 0.5
    each) separates neither. The instance error is
    ``n_not_separated / n_touching``; counts are returned so a dataset total
    is a ratio of sums.

    Returns
    -------
    n_touching, n_not_separated : int
    """
    gt, pred = _check_pair(gt, pred)
    return _instance_error(gt, _overlap(gt, pred))


def _check_fg_pair(gt_fg: np.ndarray, pred: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    g = _check_mask(gt_fg, "gt_fg")
    p = _check_mask(pred, name)
    if p.shape != g.shape:
        raise HtsError(f"{name}: shape {p.shape} differs from gt_fg shape {g.shape}")
    return g, p


def pixel_error(gt_fg: np.ndarray, pred_fg: np.ndarray) -> float:
    """Fraction of pixels whose binary foreground differs (masks: bool or int, nonzero = fg)."""
    g, p = _check_fg_pair(gt_fg, pred_fg, "pred_fg")
    return float(np.count_nonzero(g != p) / g.size) if g.size else 0.0


def _iou_or_one(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def mean_iu(gt_fg: np.ndarray, pred_fg: np.ndarray) -> float:
    """Mean over {background, foreground} of the class IoU; a class absent in both scores 1."""
    g, p = _check_fg_pair(gt_fg, pred_fg, "pred_fg")
    return float((_iou_or_one(g, p) + _iou_or_one(~g, ~p)) / 2)


def rmse(gt_fg: np.ndarray, prob: np.ndarray) -> float:
    """sqrt(mean((prob - gt_fg)^2)) for a float foreground probability map in [0, 1]."""
    g = _check_mask(gt_fg, "gt_fg")
    pr = np.asarray(prob)
    if not np.issubdtype(pr.dtype, np.floating) or pr.shape != g.shape:
        raise HtsError(f"prob: expected a float map of shape {g.shape}, got {pr.dtype} {pr.shape}")
    if not np.all((pr >= 0.0) & (pr <= 1.0)):  # also rejects NaN
        raise HtsError("prob: values must be in [0, 1]")
    return float(np.sqrt(np.mean((pr.astype(np.float64) - g) ** 2))) if pr.size else 0.0


def evaluate_image(gt: np.ndarray, pred: np.ndarray, prob: np.ndarray | None = None) -> dict:
    """All per-image metrics as plain Python numbers.

    Parameters
    ----------
    prob : (H, W) float ndarray, optional
        For ``rmse``.

    Returns
    -------
    dict
        ``pixel_error``, ``mean_iu``, ``ap_50`` ... ``ap_90``, ``dsb_score``,
        ``f1_50``, ``aji``, ``pq``, ``count_rel_error``, ``instance_error``
        (per-image ratio, 0.0 without touching nuclei), ``n_touching``,
        ``n_not_separated``, ``n_gt``, ``n_pred``; ``rmse`` with ``prob``.
    """
    gt, pred = _check_pair(gt, pred)
    ov = _overlap(gt, pred)
    n_touch, n_not = _instance_error(gt, ov)
    gt_fg, pred_fg = gt != 0, pred != 0
    out: dict = {
        "pixel_error": pixel_error(gt_fg, pred_fg),
        "mean_iu": mean_iu(gt_fg, pred_fg),
    }
    aps = {t: _ap(ov, t) for t in DSB_THRESHOLDS}
    out.update({_ap_key(t): float(aps[t]) for t in REPORT_THRESHOLDS})
    out.update(
        dsb_score=float(np.mean(list(aps.values()))),
        f1_50=float(_f1(ov, 0.5)),
        aji=float(_aji(ov)),
        pq=float(_pq(ov)),
        count_rel_error=float(_count_rel_error(ov.n_gt, ov.n_pred)),
        instance_error=float(n_not / n_touch) if n_touch else 0.0,
        n_touching=n_touch,
        n_not_separated=n_not,
        n_gt=ov.n_gt,
        n_pred=ov.n_pred,
    )
    if prob is not None:
        out["rmse"] = rmse(gt_fg, prob)
    return out


_MEAN_KEYS = (
    ("pixel_error", "mean_iu")
    + tuple(_ap_key(t) for t in REPORT_THRESHOLDS)
    + ("dsb_score", "f1_50", "aji", "pq", "count_rel_error")
)


def evaluate_dataset(
    gts: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    probs: Sequence[np.ndarray] | None = None,
) -> dict:
    """Aggregate :func:`evaluate_image` over paired lists of images.

    ``instance_error`` = total not separated / total touching (0.0 if none):
    it weights nuclei, not images; ``n_images``, ``n_gt``, ``n_pred``,
    ``n_touching`` are sums; every other metric (``rmse`` too) is the mean
    over images (the DSB2018 convention).

    Parameters
    ----------
    gts, preds : sequence of (H, W) int ndarray
        Paired ground-truth and predicted label images, at least one.
    probs : sequence of (H, W) float ndarray, optional
        Foreground probabilities, for ``rmse``.

    Returns
    -------
    dict
        Metric name to plain float or int (JSON-serialisable).
    """
    gts, preds = list(gts), list(preds)
    if not gts:
        raise HtsError("gts: need at least one image")
    if len(preds) != len(gts):
        raise HtsError(f"preds: {len(preds)} images but gts has {len(gts)}")
    if probs is not None:
        probs = list(probs)
        if len(probs) != len(gts):
            raise HtsError(f"probs: {len(probs)} images but gts has {len(gts)}")
    per = [
        evaluate_image(g, p, None if probs is None else probs[i])
        for i, (g, p) in enumerate(zip(gts, preds))
    ]
    keys = _MEAN_KEYS + (("rmse",) if probs is not None else ())
    out: dict = {k: float(np.mean([r[k] for r in per])) for k in keys}
    n_touch = sum(r["n_touching"] for r in per)
    n_not = sum(r["n_not_separated"] for r in per)
    out.update(
        instance_error=float(n_not / n_touch) if n_touch else 0.0,
        n_images=len(per),
        n_gt=int(sum(r["n_gt"] for r in per)),
        n_pred=int(sum(r["n_pred"] for r in per)),
        n_touching=int(n_touch),
    )
    return out


def centroid_recall(gt: np.ndarray, centroids_xy: np.ndarray) -> dict:
    """How RPN centroids (markers) cover ground-truth nuclei.

    Parameters
    ----------
    centroids_xy : (N, 2) float ndarray
        ``(x, y)`` in px.

    Returns
    -------
    dict of str to int
        ``n_gt``; ``hit`` (nuclei holding at least one centroid), ``single``
        (exactly one: what the watershed layer needs), ``split`` (two or
        more: the paper's failure mode), ``stray`` (centroids on background).
    """
    gt = _check_labels(gt, "gt")
    c = np.asarray(centroids_xy, np.float64).reshape(-1, 2)
    rows = np.clip(np.floor(c[:, 1]).astype(np.int64), 0, gt.shape[0] - 1)
    cols = np.clip(np.floor(c[:, 0]).astype(np.int64), 0, gt.shape[1] - 1)
    ids, n_per = np.unique(gt[rows, cols], return_counts=True)
    per = dict(zip(ids.tolist(), n_per.tolist()))
    gt_ids = np.unique(gt)
    gt_ids = gt_ids[gt_ids != 0]
    hits = np.array([per.get(int(i), 0) for i in gt_ids])
    return {
        "n_gt": int(gt_ids.size),
        "hit": int((hits >= 1).sum()),
        "single": int((hits == 1).sum()),
        "split": int((hits >= 2).sum()),
        "stray": int(per.get(0, 0)),
    }
