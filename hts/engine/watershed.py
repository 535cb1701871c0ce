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
    """Marker image with marker ``i + 1`` at the pixel of centroid ``i``.

    A centroid at ``x`` lies in pixel column ``floor(x)``. Centroids outside
    the image or on background are dropped (a marker on background would
    grow nothing); when two land on the same pixel, the first wins.

    Parameters
    ----------
    centroids_xy : (N, 2) float ndarray
        ``(x, y)`` in px, as from box centroids ``((x1+x2)/2, (y1+y2)/2)``.
    mask : (H, W) bool ndarray
        Foreground.

    Returns
    -------
    (H, W) int32 ndarray
        0 = no marker.
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
    """The paper's watershed layer: instance labels from a foreground mask and markers.

    The watershed floods the negative Euclidean distance transform of the
    mask from the markers, so the lines fall on the necks between touching
    nuclei. A foreground component that receives no marker still becomes
    one nucleus: nothing is silently dropped. An object under ``noise_size``
    that touches another is merged, not removed, so no foreground inside a
    nucleus is lost.

    Parameters
    ----------
    foreground : (H, W) bool ndarray
        The U-Net mask (probability above the foreground threshold).
    markers : (H, W) int ndarray
        0 = no marker (see :func:`centroid_markers`, :func:`distance_markers`).
    min_size : int, optional
        Objects under this area (px^2) merge into the touching nucleus they
        share most border with (watershed slivers); 0 keeps all.
    noise_size : int, optional
        Isolated objects under this area (px^2) are removed as noise;
        default ``min_size``.

    Returns
    -------
    (H, W) uint32 ndarray
        0 = background, nuclei 1..N sequential.

    Raises
    ------
    HtsError
        When ``foreground`` is not 2D or ``markers`` has another shape.
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
    """Merge objects under ``min_size`` px^2 into the neighbour sharing most 4-connected border.

    Objects with no neighbour are left for :func:`relabel` to drop. Chains
    (a small object whose best neighbour is small too) end at a large one
    where one exists.

    Parameters
    ----------
    labels : (H, W) non-negative int ndarray
        Instance labels, 0 = background.
    min_size : int
        Area threshold, px^2.

    Returns
    -------
    (H, W) int ndarray
        Same ids, small objects renamed to their neighbour's (not sequential).
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
    """Sequential uint32 labels 1..N (in order of the input ids), dropping objects < ``min_size`` px^2.

    One ``bincount`` when the ids are dense (the usual case), which is much
    cheaper than a sort of every pixel (see docs/performance.md).

    Parameters
    ----------
    labels : ndarray
        Non-negative integer labels, any shape; 0 = background.
    min_size : int, optional
        Objects under this area (px^2) become background.

    Returns
    -------
    uint32 ndarray
        Shape of ``labels``.
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
    """Markers at the peaks of the distance transform of ``foreground``.

    The classical marker choice (used by the plain U-Net baseline and the
    classical peer): one marker per local maximum at least ``min_distance``
    px apart, per connected component.

    Parameters
    ----------
    foreground : (H, W) bool ndarray
        The mask; peaks are found per connected component.
    min_distance : int, optional
        Minimum peak separation, px.

    Returns
    -------
    (H, W) int32 ndarray
        Markers 1..N, 0 elsewhere.
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
    """Size thresholds of the watershed layer for nuclei of median ``diameter`` px.

    ``min_size``: watershed slivers under 10% of the median nucleus area
    (the DSB2018 5th percentile is 13%) merge into their neighbour;
    ``noise_size``: objects left under 5% of that area, and never under
    25 px^2 (a disc of ~5.6 px: below it bright specks and noise outnumber
    real micronuclei at any magnification), are removed. The floor keeps
    the annotated micronuclei beside 40-50 px nuclei that a relative rule
    alone removes, and drops specks beside 10 px nuclei that it keeps
    (measured effect: docs/performance.md).
    ``min_distance``: distance-peak markers at least a third of a diameter apart.

    Parameters
    ----------
    diameter : float or None
        Median nucleus diameter, px; None or 0: :data:`DEFAULT_DIAMETER` (20 px).

    Returns
    -------
    dict of str to int
        ``min_size`` and ``noise_size`` (px^2) and ``min_distance`` (px),
        keywords of :func:`instance_labels`.
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
    drew a background line between them.

    Parameters
    ----------
    prob : (H, W) float ndarray
        Foreground probability in [0, 1].
    threshold : float, optional
        Foreground is ``prob > threshold``.
    min_size : int, optional
        Components under this area (px^2) are dropped.

    Returns
    -------
    (H, W) uint32 ndarray
        0 = background, 1..N sequential.
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

    With boxes the markers are their centroids (the paper's watershed
    layer); without (a model without RPN) the distance-transform peaks of
    :func:`distance_markers`.

    Parameters
    ----------
    prob : (H, W) float ndarray
        Foreground probability in [0, 1].
    boxes : (N, 4) float ndarray, optional
        RPN proposals ``(x1, y1, x2, y2)``, px of ``prob``'s frame.
    threshold : float, optional
        Foreground is ``prob > threshold``.
    min_size, noise_size : int, optional
        Sliver and noise areas, px^2, as in :func:`watershed_layer`
        (see :func:`size_params`).
    min_distance : int, optional
        Peak separation (px) of the distance markers, used without ``boxes``.

    Returns
    -------
    (H, W) uint32 ndarray
        0 = background, nuclei 1..N sequential.
    """
    foreground = np.asarray(prob) > threshold
    if boxes is None:
        markers = distance_markers(foreground, min_distance)
    else:
        # imported here, not at the top: only the RPN path needs the model package (torch)
        from hts.model.boxes import box_centroids

        markers = centroid_markers(box_centroids(np.asarray(boxes, np.float64).reshape(-1, 4)), foreground)
    return watershed_layer(foreground, markers, min_size, noise_size)
