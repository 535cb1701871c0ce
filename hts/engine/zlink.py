"""Link independently segmented 2D planes of a z-stack into 3D nuclei.

The idea is Cellpose's ``stitch_threshold``: walk the planes in order and
compare each label of plane ``z`` with the labels of the already-linked plane
``z - 1`` by their intersection over union (IoU); a label takes the 3D id of
its match when the IoU reaches the threshold, otherwise it starts a new
nucleus. Unlike Cellpose's per-label argmax, the matching here is one-to-one
per plane pair (:func:`scipy.optimize.linear_sum_assignment` on ``-IoU``), so
one nucleus of plane ``z - 1`` never passes its id to two labels of plane
``z``.

Consequences of linking consecutive planes only:

- A nucleus missing from one plane (a segmentation miss, an out-of-focus
  plane) and found again on the next gets a new id: the two parts are two
  nuclei in the output.
- Two different nuclei that overlap in xy on successive planes (one ending,
  the other starting) merge when their IoU reaches the threshold; a higher
  threshold keeps them apart at the cost of splitting nuclei whose
  cross-section changes fast between planes.
- ``iou=0`` (``--z-link 0``) keeps the planes independent: every plane's
  labels get ids of their own, unique across the stack, and nothing links.

numpy in, numpy out; memory beyond the input and output stack is one plane
pair at a time.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from hts.errors import HtsError

Z_LINK_IOU = 0.25  # Cellpose's default stitch_threshold


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero ids of a label image and every pixel's index among them.

    Parameters
    ----------
    labels : non-negative int ndarray, any shape
        0 = background.

    Returns
    -------
    ids : (N,) ndarray
        The distinct nonzero ids, ascending, in the input's dtype.
    index : ndarray, ``labels.size`` int64, flat
        ``index[p]`` is the position of pixel ``p``'s id in ``ids``; -1 on
        background.
    """
    values, inverse = np.unique(labels.ravel(), return_inverse=True)
    inverse = inverse.ravel().astype(np.int64)
    if values.size and values[0] == 0:
        return values[1:], inverse - 1
    return values, inverse


def _iou(index_a: np.ndarray, n_a: int, index_b: np.ndarray, n_b: int) -> np.ndarray:
    """IoU of every pair of objects of two compacted label images of the same shape.

    The overlap counts come from one bincount over the pixel pairs where both
    images are foreground (pair code ``i * n_b + j``), the areas from a
    bincount per image: no loop over objects.

    Parameters
    ----------
    index_a, index_b : (P,) int64 ndarray
        Flat object indices as from :func:`_compact` (-1 = background).
    n_a, n_b : int
        Number of objects in each.

    Returns
    -------
    (n_a, n_b) float64 ndarray
        In [0, 1]; 0 where two objects do not overlap.
    """
    if n_a == 0 or n_b == 0:
        return np.zeros((n_a, n_b))
    both = (index_a >= 0) & (index_b >= 0)
    codes = index_a[both] * n_b + index_b[both]
    inter = np.bincount(codes, minlength=n_a * n_b).reshape(n_a, n_b).astype(np.float64)
    area_a = np.bincount(index_a[index_a >= 0], minlength=n_a).astype(np.float64)
    area_b = np.bincount(index_b[index_b >= 0], minlength=n_b).astype(np.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union  # union >= area > 0 for every object present


def _check_labels(labels: np.ndarray, ndim: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != ndim:
        raise HtsError(f"{name} must be a {ndim}D label image, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise HtsError(f"{name} must hold integer labels, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise HtsError(f"{name} has negative labels")
    return labels


def plane_iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every label pair of two label planes.

    Parameters
    ----------
    a, b : (H, W) non-negative int ndarray
        Label images of the same shape, 0 = background; ids arbitrary.

    Returns
    -------
    ids_a : (Na,) ndarray
        The nonzero ids of ``a``, ascending (``a``'s dtype).
    ids_b : (Nb,) ndarray
        The nonzero ids of ``b``, ascending.
    iou : (Na, Nb) float64 ndarray
        ``iou[i, j]`` = |a == ids_a[i] and b == ids_b[j]| / |a == ids_a[i] or
        b == ids_b[j]|, in [0, 1].

    Raises
    ------
    HtsError
        When either is not a 2D integer image or the shapes differ.
    """
    a = _check_labels(a, 2, "a")
    b = _check_labels(b, 2, "b")
    if a.shape != b.shape:
        raise HtsError(f"plane shapes differ: {a.shape} and {b.shape}")
    ids_a, index_a = _compact(a)
    ids_b, index_b = _compact(b)
    return ids_a, ids_b, _iou(index_a, ids_a.size, index_b, ids_b.size)


def _assign(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs maximising the summed IoU over pairs with IoU >= ``threshold``.

    Entries under the threshold are zeroed before the assignment, so a
    qualifying pair is never given up for a pair that would be dropped. Only
    the rows and columns with a qualifying entry enter the (cubic) solver.

    Parameters
    ----------
    iou : (N, M) float ndarray
    threshold : float
        > 0.

    Returns
    -------
    rows, cols : (K,) int ndarray
        Matched pairs, every ``iou[rows, cols] >= threshold``.
    """
    good = iou >= threshold
    r_keep = np.flatnonzero(good.any(axis=1))
    c_keep = np.flatnonzero(good.any(axis=0))
    if r_keep.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sub = np.where(good[np.ix_(r_keep, c_keep)], iou[np.ix_(r_keep, c_keep)], 0.0)
    r, c = linear_sum_assignment(-sub)
    ok = sub[r, c] >= threshold
    return r_keep[r[ok]], c_keep[c[ok]]


def link_planes(labels: np.ndarray, iou: float = Z_LINK_IOU) -> np.ndarray:
    """3D nuclei from a stack of planes segmented one by one.

    Plane ``z``'s labels are matched one-to-one with the 3D ids of the
    already-linked plane ``z - 1`` by IoU; a matched label (IoU >= ``iou``)
    takes its partner's id, the others new ids. Only consecutive planes are
    compared, so a nucleus absent from a plane and present again after it
    gets a new id, and an empty plane breaks every chain.

    Parameters
    ----------
    labels : (Z, H, W) non-negative int ndarray
        Each plane labelled on its own (uint32 from the 2D engine); 0 =
        background, ids arbitrary and unrelated between planes.
    iou : float, optional
        IoU threshold in [0, 1] for linking (Cellpose's ``stitch_threshold``,
        default 0.25). 0 (``--z-link 0``) keeps the planes independent: the
        output has the input's segmentation with ids unique across planes.

    Returns
    -------
    (Z, H, W) uint32 ndarray
        One id per 3D nucleus, 0 = background; ids 1..N dense, in order of
        first appearance (by plane, then by the input id within the plane).

    Raises
    ------
    HtsError
        When ``labels`` is not a 3D integer stack or ``iou`` is outside [0, 1].
    """
    labels = _check_labels(labels, 3, "labels")
    if not 0.0 <= iou <= 1.0:
        raise HtsError(f"z-link IoU must be in [0, 1], got {iou}")
    out = np.zeros(labels.shape, np.uint32)
    next_id = 1
    prev_index, prev_ids = None, np.zeros(0, np.uint32)
    for z in range(labels.shape[0]):
        ids, index = _compact(labels[z])
        new = np.zeros(ids.size, np.uint32)
        matched = np.zeros(ids.size, bool)
        if iou > 0 and prev_index is not None and ids.size and prev_ids.size:
            rows, cols = _assign(_iou(index, ids.size, prev_index, prev_ids.size), iou)
            new[rows] = prev_ids[cols]
            matched[rows] = True
        n_new = int((~matched).sum())
        new[~matched] = np.arange(next_id, next_id + n_new, dtype=np.uint32)
        next_id += n_new
        plane = out[z].reshape(-1)  # a view: writes go to out
        fg = index >= 0
        plane[fg] = new[index[fg]]
        prev_index, prev_ids = index, new
    return out


WAIST = 0.5  # a nucleus is cut where its plane area falls below this fraction of the peaks on both sides
BALANCE = 0.2  # ... and only when the smaller of those peaks is at least this fraction of the larger


def split_waists(labels: np.ndarray, ratio: float = WAIST) -> np.ndarray:
    """Cut linked nuclei where their area along z has a waist: two nuclei stacked in z, bridged by blur.

    A nucleus is an ellipsoid: its area per plane rises to one peak and
    falls. Two nuclei one above the other overlap in ``(y, x)``, and the
    out-of-focus light between them is segmented too, so IoU linking
    (:func:`link_planes`) joins them. Their area profile then has two
    peaks; at the lowest plane between them, when its area is under
    ``ratio`` times the smaller of the two peaks (and that peak is at least
    :data:`BALANCE` of the larger), the label is cut: the
    planes above get a new id, the waist plane goes with the side of its
    larger neighbour. Repeated until no label has such a waist.

    Parameters
    ----------
    labels : (Z, H, W) uint32 ndarray
        Linked 3D labels.
    ratio : float
        Waist depth, in (0, 1); 0 cuts nothing.

    Returns
    -------
    (Z, H, W) uint32 ndarray
        The labels with cut nuclei renumbered (ids dense, in order of first appearance).
    """
    out = np.array(labels, dtype=np.uint32, copy=True)
    if ratio <= 0 or out.shape[0] < 3 or not out.any():
        return out
    changed = True
    while changed:
        changed = False
        n = int(out.max()) + 1
        area = np.stack([np.bincount(plane.ravel(), minlength=n) for plane in out], axis=1)  # (n, Z)
        next_id = n
        for lab in np.flatnonzero(area[1:].any(axis=1)) + 1:
            a = area[lab].astype(float)
            cut = _waist(a, ratio)
            if cut is None:
                continue
            z, upper_from = cut
            part = out[upper_from:]
            part[part == lab] = next_id
            next_id += 1
            changed = True
    return _renumber(out)


def _waist(a: np.ndarray, ratio: float) -> tuple[int, int] | None:
    """The deepest waist of an area profile and the first plane of its upper part, or None.

    Both sides must hold a nucleus: the smaller peak at least
    :data:`BALANCE` of the larger, so a thin bridge of blur on one end is
    not cut off as a nucleus of its own.
    """
    zs = np.flatnonzero(a)
    best = None
    for z in range(zs[0] + 1, zs[-1]):
        below, above = a[zs[0]:z].max(), a[z + 1:zs[-1] + 1].max()
        peak = min(below, above)
        if a[z] < ratio * peak and peak >= BALANCE * max(below, above) and (best is None or a[z] / peak < best[0]):
            best = (a[z] / peak, z)
    if best is None:
        return None
    z = best[1]
    return z, z + 1 if a[z - 1] >= a[z + 1] else z


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Ids 1..N in order of first appearance (plane by plane, in raster order)."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    order = ids[keep][np.argsort(first[keep], kind="stable")]
    lut = np.zeros(int(ids.max()) + 1, dtype=np.uint32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.uint32)
    return lut[labels]


def match_3d(truth: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> dict:
    """One-to-one matching of 3D instances by their 3D IoU.

    For tests and benchmarks of :func:`link_planes` (and 3D segmentation in
    general): pairs are found by :func:`scipy.optimize.linear_sum_assignment`
    over the pairs with IoU >= ``iou``.

    Parameters
    ----------
    truth, pred : (Z, H, W) non-negative int ndarray
        Instance labels of the same shape, 0 = background.
    iou : float, optional
        Minimum 3D IoU of a match (> 0; 0.5 makes the matching unique).

    Returns
    -------
    dict
        ``true`` and ``pred`` (instance counts), ``matched`` (k), ``recall``
        (k / true) and ``precision`` (k / pred); a ratio with a zero
        denominator is NaN.

    Raises
    ------
    HtsError
        When either is not a 3D integer stack, the shapes differ or ``iou``
        is not in (0, 1].
    """
    truth = _check_labels(truth, 3, "truth")
    pred = _check_labels(pred, 3, "pred")
    if truth.shape != pred.shape:
        raise HtsError(f"truth shape {truth.shape} differs from pred shape {pred.shape}")
    if not 0.0 < iou <= 1.0:
        raise HtsError(f"match IoU must be in (0, 1], got {iou}")
    ids_t, index_t = _compact(truth)
    ids_p, index_p = _compact(pred)
    rows, _ = _assign(_iou(index_t, ids_t.size, index_p, ids_p.size), iou)
    k = int(rows.size)
    return {
        "true": int(ids_t.size),
        "pred": int(ids_p.size),
        "matched": k,
        "recall": k / ids_t.size if ids_t.size else float("nan"),
        "precision": k / ids_p.size if ids_p.size else float("nan"),
    }
