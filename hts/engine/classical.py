"""The classical pipeline a screening lab uses without deep learning (a peer, and the size estimator).

Percentile normalisation, Gaussian smoothing, Otsu threshold, distance-
transform peaks as markers, watershed (scikit-image). numpy in, numpy out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from hts.engine.preprocess import check_image, normalize
from hts.engine.watershed import distance_markers, watershed_layer


def classical_segment(image: np.ndarray, sigma: float = 1.0, min_distance: int = 5, min_size: int = 10) -> np.ndarray:
    """Instance labels ``(H, W)`` uint32 of the classical pipeline.

    ``sigma``: Gaussian smoothing in px; ``min_distance``: minimum distance
    (px) between two markers; ``min_size``: objects smaller than this (px)
    are noise and removed.
    """
    norm = ndimage.gaussian_filter(normalize(check_image(image)), sigma)
    if norm.max() <= norm.min():
        return np.zeros(norm.shape, np.uint32)
    foreground = norm > threshold_otsu(norm)
    foreground = ndimage.binary_fill_holes(ndimage.binary_opening(foreground))
    return watershed_layer(foreground, distance_markers(foreground, min_distance), min_size)
