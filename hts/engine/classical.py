"""The classical pipeline a screening lab uses without deep learning (a peer, and the size estimator).

Percentile normalisation, Gaussian smoothing, Otsu threshold, distance-
transform peaks as markers, watershed (scikit-image). numpy in, numpy out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hts.engine.preprocess import check_image, normalize, otsu_threshold
from hts.engine.watershed import distance_markers, watershed_layer


def classical_segment(image: np.ndarray, sigma: float = 1.0, min_distance: int = 5, min_size: int = 10) -> np.ndarray:
    """Instance labels of the classical pipeline: the peer without deep learning.

    Percentile normalisation, Gaussian smoothing, Otsu threshold, opening and
    hole filling, then a watershed from distance-transform peaks. Also how
    :mod:`hts.engine.scale` estimates the nucleus diameter.

    Parameters
    ----------
    image : (H, W) array_like
        Intensity image, any real dtype (checked by
        :func:`hts.engine.preprocess.check_image`).
    sigma : float, optional
        Gaussian smoothing, px.
    min_distance : int, optional
        Minimum distance between two markers, px.
    min_size : int, optional
        Objects smaller than this area (px^2) are noise and removed.

    Returns
    -------
    (H, W) uint32 ndarray
        0 = background, nuclei 1..N sequential; all 0 for a constant image.
    """
    norm = ndimage.gaussian_filter(normalize(check_image(image)), sigma)
    if norm.max() <= norm.min():
        return np.zeros(norm.shape, np.uint32)
    foreground = norm > otsu_threshold(norm)
    foreground = ndimage.binary_fill_holes(ndimage.binary_opening(foreground))
    return watershed_layer(foreground, distance_markers(foreground, min_distance), min_size)
