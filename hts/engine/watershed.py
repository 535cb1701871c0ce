"""The watershed layer: RPN box centroids as markers on the U-Net foreground.

numpy in, numpy out (scikit-image style); no torch here, so the stage runs
on any worker.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from hts.errors import HtsError


def centroid_markers(centroids_xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Marker image ``(H, W)`` int32 with marker ``i + 1`` at the pixel of centroid ``i``.

    ``centroids_xy (N, 2)`` are ``(x, y)`` in pixels (as from box centroids
    ``((x1+x2)/2, (y1+y2)/2)``); a centroid at ``x`` lies in pixel column
    ``floor(x)``. Centroids outside the image or on background are dropped
    (a marker on background would grow nothing); when two land on the same
    pixel, the first wins.
    """
    h, w = mask.shape
    markers = np.zeros((h, w), np.int32)
    c = np.asarray(centroids_xy, np.float64).reshape(-1, 2)
    cols = np.floor(c[:, 0]).astype(np.int64)
    rows = np.floor(c[:, 1]).astype(np.int64)
    ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    idx = np.flatnonzero(ok)
    ok_fg = mask[rows[idx], cols[idx]]
    idx = idx[ok_fg]
    # Reverse so that, for duplicates, the first centroid's id is written last.
    markers[rows[idx][::-1], cols[idx][::-1]] = (idx + 1)[::-1].astype(np.int32)
    return markers


def watershed_layer(
    foreground: np.ndarray,
    markers: np.ndarray,
    min_size: int = 0,
    noise_size: int | None = None,
) -> np.ndarray:
    """Instance labels ``(H, W)`` uint32 (0 = background, 1..N sequential).

    ``foreground (H, W)`` bool is the U-Net mask (probability > 0.5);
    ``markers (H, W)`` int, 0 = no marker. The watershed floods the negative
    Euclidean distance transform of the mask from the markers, so the lines
    fall on the necks between touching nuclei. A foreground component that
    receives no marker still becomes one nucleus: nothing is silently dropped.
    Objects smaller than ``min_size`` px are merged into the touching
    nucleus they share most border with (watershed slivers); isolated ones
    smaller than ``noise_size`` px (default ``min_size``) are removed as
    noise. An object under ``noise_size`` that touches another is merged,
    not removed, so no foreground inside a nucleus is lost. 0 keeps all.
    """
    foreground = np.asarray(foreground, bool)
    if foreground.ndim != 2:
        raise HtsError(f"foreground must be a 2D mask, got shape {foreground.shape}")
    if markers.shape != foreground.shape:
        raise HtsError(f"markers shape {markers.shape} differs from foreground shape {foreground.shape}")
    if not foreground.any():
        return np.zeros(foreground.shape, np.uint32)
    distance = ndimage.distance_transform_edt(foreground)
    markers = np.where(foreground, markers, 0)
    labels = watershed(-distance, markers=markers, mask=foreground).astype(np.int64)
    # Components without a marker: label them as new nuclei.
    unclaimed, n_new = ndimage.label(foreground & (labels == 0))
    if n_new:
        labels = np.where(unclaimed > 0, unclaimed + labels.max(), labels)
    noise_size = min_size if noise_size is None else noise_size
    if max(min_size, noise_size) > 0:
        labels = merge_small(labels, max(min_size, noise_size))
    return relabel(labels, noise_size)


def merge_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge objects under ``min_size`` px into the neighbour sharing most 4-connected border.

    Objects with no neighbour are left for :func:`relabel` to drop. Chains
    (a small object whose best neighbour is small too) end at a large one
    where one exists.
    """
    areas = np.bincount(labels.ravel())
    small = (areas > 0) & (areas < min_size)
    small[0] = False
    if not small.any():
        return labels
    a = np.concatenate((labels[:, :-1].ravel(), labels[:-1, :].ravel()))
    b = np.concatenate((labels[:, 1:].ravel(), labels[1:, :].ravel()))
    touch = (a != b) & (a > 0) & (b > 0)
    a, b = a[touch], b[touch]
    src, dst = np.concatenate((a, b)), np.concatenate((b, a))
    keep = small[src]
    src, dst = src[keep], dst[keep]
    if src.size == 0:
        return labels
    pairs, counts = np.unique(np.stack((src, dst)), axis=1, return_counts=True)
    # per small object, the neighbour with the most contacts (ties: the larger neighbour, then lower id)
    order = np.lexsort((pairs[1], -areas[pairs[1]], -counts, pairs[0]))
    pairs = pairs[:, order]
    first = np.unique(pairs[0], return_index=True)[1]
    lut = np.arange(areas.size, dtype=np.int64)
    lut[pairs[0, first]] = pairs[1, first]
    for _ in range(8):  # resolve chains small -> small -> large
        nxt = lut[lut]
        if np.array_equal(nxt, lut):
            break
        lut = nxt
    return lut[labels]


def relabel(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Sequential uint32 labels 1..N (in order of the input ids), dropping objects < ``min_size`` px.

    Non-negative integer ``labels``; one ``bincount`` when the ids are dense
    (the usual case: a sort of every pixel cost a quarter of the watershed).
    """
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if labels.size and labels.min() >= 0 and top <= 4 * labels.size:
        counts = np.bincount(labels.ravel(), minlength=top + 1)
        keep = counts >= max(min_size, 1)
        keep[0] = False
        lut = np.zeros(counts.size, np.uint32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
        return lut[labels]
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (ids != 0) & (counts >= max(min_size, 1))
    new = np.zeros(ids.shape, np.uint32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return new[inverse].reshape(labels.shape)


def distance_markers(foreground: np.ndarray, min_distance: int = 5) -> np.ndarray:
    """Markers at the peaks of the distance transform of ``foreground`` (int32 image).

    The classical marker choice (used by the plain U-Net baseline and the
    classical peer): one marker per local maximum at least ``min_distance``
    px apart, per connected component.
    """
    foreground = np.asarray(foreground, bool)
    distance = ndimage.distance_transform_edt(foreground)
    components, _ = ndimage.label(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return markers


MIN_AREA_FRACTION = 0.1  # watershed fragments under 10% of a median nucleus' area are slivers
NOISE_AREA_FRACTION = 0.05  # objects under 5% of a median nucleus' area are noise ...
NOISE_MIN_PX = 25  # ... and so is anything under 25 px, whatever the magnification
DEFAULT_DIAMETER = 20.0  # px, when nothing better is known (the DSB2018 median)


def size_params(diameter: float | None) -> dict[str, int]:
    """``min_size``, ``noise_size`` and ``min_distance`` (px) for nuclei of median ``diameter`` px.

    ``min_size``: watershed slivers under 10% of the median nucleus area
    (the DSB2018 5th percentile is 13%) merge into their neighbour;
    ``noise_size``: objects left under 5% of that area, and never under
    25 px (a disc of ~5.6 px: below it bright specks and noise outnumber
    real micronuclei at any magnification), are removed. The floor keeps
    the annotated micronuclei beside 40-50 px nuclei that a relative rule
    alone removes, and drops specks beside 10 px nuclei that it keeps
    (validation AP@0.5 0.844 -> 0.859, see the model card).
    ``min_distance``: distance-peak markers at least a third of a diameter apart.
    """
    d = float(diameter) if diameter else DEFAULT_DIAMETER
    area = np.pi * d * d / 4
    return {"min_size": int(round(MIN_AREA_FRACTION * area)),
            "noise_size": max(int(round(NOISE_AREA_FRACTION * area)), NOISE_MIN_PX),
            "min_distance": max(3, int(round(d / 3)))}


def component_labels(prob: np.ndarray, threshold: float = 0.5, min_size: int = 0) -> np.ndarray:
    """Instances as the 4-connected components of ``prob > threshold``, no watershed.

    What a segmentation network gives on its own (the paper's rows without
    the watershed layer): touching nuclei stay apart only where the network
    drew a background line between them. Components under ``min_size`` px go.
    """
    from skimage.measure import label

    return relabel(label(np.asarray(prob) > threshold, connectivity=1), min_size)


def instance_labels(
    prob: np.ndarray,
    boxes: np.ndarray | None = None,
    threshold: float = 0.5,
    min_size: int = 0,
    min_distance: int = 5,
    noise_size: int | None = None,
) -> np.ndarray:
    """Instance labels from a foreground probability and RPN boxes (the inference path).

    ``prob (H, W)`` in [0, 1]; foreground is ``prob > threshold``;
    ``min_size`` and ``noise_size`` (px) as in :func:`watershed_layer`. With
    ``boxes (N, 4)`` the markers are their centroids (the paper's watershed
    layer); with ``boxes=None`` (a model without RPN) the markers are the
    distance-transform peaks of :func:`distance_markers`.
    """
    foreground = np.asarray(prob) > threshold
    if boxes is None:
        markers = distance_markers(foreground, min_distance)
    else:
        # imported here, not at the top: only the RPN path needs the model package (torch)
        from hts.model.boxes import box_centroids

        markers = centroid_markers(box_centroids(np.asarray(boxes, np.float64).reshape(-1, 4)), foreground)
    return watershed_layer(foreground, markers, min_size, noise_size)
