"""Nucleus size: equivalent diameters and rescaling to the model's canonical diameter.

Real screens differ in magnification: the DSB2018 fluorescence images have
per-image median nucleus diameters from about 10 to 50 px. The network's
16-px stride and anchors suit nuclei of about ``ModelConfig.diameter``
(32 px), so images are resampled by ``canonical / diameter`` before the
network and its outputs are mapped back to the input's pixel grid.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from hts.errors import HtsError


def median_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent diameter ``2 sqrt(area / pi)`` (px) of the instances; None without any."""
    lab = np.asarray(labels)
    if lab.size == 0:
        return None
    if 0 <= lab.min() and lab.max() <= 2 * lab.size:  # the usual case: bincount, linear time
        counts = np.bincount(lab.ravel().astype(np.int64))[1:]
        counts = counts[counts > 0]
    else:  # huge ids (e.g. 2**40) would make bincount allocate that much
        counts = np.unique(lab[lab > 0], return_counts=True)[1]
    if counts.size == 0:
        return None
    return float(np.median(2.0 * np.sqrt(counts / np.pi)))


MIN_DIAMETER_PX = 4.0  # smaller nuclei would be upsampled more than 8x to the canonical 32 px


def check_diameter(diameter: float, shape: tuple[int, int] | None = None, name: str = "diameter") -> None:
    """Refuse a nucleus diameter that cannot describe the images.

    Parameters
    ----------
    diameter : float
        The nucleus diameter given, px.
    shape : tuple of int, optional
        ``(H, W)`` of the images, px: the diameter may not exceed the
        smaller side (such an image would shrink to nothing).
    name : str
        The option's name for the message (e.g. ``--diameter``).

    Raises
    ------
    HtsError
        Not a finite number, under :data:`MIN_DIAMETER_PX`, or wider than the image.
    """
    if isinstance(diameter, bool) or not isinstance(diameter, (int, float, np.floating, np.integer)) \
            or not np.isfinite(diameter) or diameter <= 0:
        raise HtsError(f"{name} must be a positive number of px, got {diameter!r}")
    if diameter < MIN_DIAMETER_PX:
        raise HtsError(f"{name} {diameter:g}: nuclei under {MIN_DIAMETER_PX:g} px cannot be segmented "
                       "(the images would be upsampled more than 8x); image them at a higher magnification")
    if shape is not None and diameter > min(shape):
        raise HtsError(f"{name} {diameter:g}: wider than the images ({shape[0]} x {shape[1]} px); "
                       "give the nucleus diameter in px of the image")


def scale_factor(canonical: float, diameter: float | None) -> float:
    """Resampling factor that brings nuclei of ``diameter`` px to ``canonical`` px (1.0 if unknown)."""
    if diameter is None:
        return 1.0
    if not np.isfinite(diameter) or diameter <= 0:
        raise HtsError(f"diameter must be a positive number of pixels, got {diameter!r}")
    return float(canonical) / float(diameter)


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Float32 image resampled by ``factor`` (bilinear; anti-aliased when shrinking); at least 1 px per side."""
    if abs(factor - 1.0) < 1e-6:
        return np.asarray(image, np.float32)
    shape = tuple(max(1, int(round(s * factor))) for s in image.shape)
    return resize(image, shape, order=1, anti_aliasing=factor < 1, preserve_range=True).astype(np.float32)


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Float32 ``image`` resampled (bilinear) to exactly ``shape``."""
    if image.shape == tuple(shape):
        return np.asarray(image, np.float32)
    return resize(image, shape, order=1, anti_aliasing=False, preserve_range=True).astype(np.float32)


def classical_diameter(image: np.ndarray) -> float | None:
    """Median nucleus diameter (px) of ``image`` by the classical pipeline; None if it finds none.

    Otsu foreground split at distance-transform peaks (:mod:`hts.engine.classical`)
    after 2-px smoothing. Within about 20% on smooth nuclei of 10-60 px, but
    it cuts large textured nuclei into pieces (12-30 px for 90-110 px nuclei):
    it is the starting point of the network's estimate
    (:func:`hts.engine.size.estimate_diameter`), not an answer.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        A 2D fluorescence image, any real dtype.

    Returns
    -------
    float or None
        Median equivalent diameter in px.
    """
    from hts.engine.classical import classical_segment

    return median_diameter(classical_segment(image, sigma=2.0, min_distance=4, min_size=16))
