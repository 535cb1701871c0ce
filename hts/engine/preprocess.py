"""Input checks and per-image normalisation, shared by training and inference."""

from __future__ import annotations

import math

import numpy as np

from hts.errors import HtsError

PERCENTILES = (1.0, 99.8)
DEBRIS_RATIO = 5.0  # debris: pixels this many times the typical nucleus' brightness above the low percentile ...
DEBRIS_MIN_FRACTION = 5e-4  # ... covering at least this fraction of the image ...
DEBRIS_MAX_SHARE = 0.5  # ... and at most this share of the object pixels
OTSU_CLIP_PERCENTILE = 99.0  # objects for the typical brightness: Otsu on the image clipped here
SAFE_EXPONENT = 100  # float images whose magnitude is outside 2**-100 .. 2**100 are scaled by a power of two first
OTSU_EXPONENT = 20  # skimage's Otsu sums squares in float32: it gets images scaled into 2**-20 .. 2**20
NORM_LIMIT = 1e6  # normalised intensities are clipped here: a million ranges above the nuclei is debris, not signal


def check_image(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` as a 2D numeric numpy array or raise a one-line :class:`HtsError`.

    Every entry point checks its input here, so a bad image ends with one
    clear message instead of a traceback deep in numpy or torch.

    Parameters
    ----------
    image : array_like
        Candidate ``(H, W)`` intensity image.
    name : str, optional
        A file or parameter name, used in the message.

    Returns
    -------
    (H, W) ndarray
        ``image`` as an array (not copied when it already is one), integer or
        floating dtype.

    Raises
    ------
    HtsError
        For input numpy cannot read as numbers, anything not 2D, an empty
        array, bool/complex/object/string or extended-precision float
        dtypes, NaN or inf pixels.
    """
    try:
        arr = np.asarray(image)
    except Exception as exc:  # numpy raises many types for ragged input
        raise HtsError(f"{name}: cannot read as an array ({exc})") from None
    if arr.dtype == bool:
        raise HtsError(f"{name}: bool data is a mask, not an intensity image")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise HtsError(f"{name}: dtype {arr.dtype} is not a real numeric type")
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 8:
        raise HtsError(f"{name}: dtype {arr.dtype} (extended precision) is not supported, use float64")
    if arr.ndim != 2:
        raise HtsError(f"{name}: expected a 2D (height, width) image, got shape {arr.shape}")
    if arr.size == 0:
        raise HtsError(f"{name}: image is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise HtsError(f"{name}: image has NaN or infinite pixels")
    return arr


def as_numpy(array) -> np.ndarray:
    """A numpy array from a numpy, zarr or dask (slice of an) array, reading it now.

    Parameters
    ----------
    array : array_like
        numpy, zarr or dask array (``.compute()`` is called when present).

    Returns
    -------
    ndarray
        Same shape and dtype.
    """
    return np.asarray(array.compute() if hasattr(array, "compute") else array)


def float32_view(values, reference: float = 0.0) -> tuple[np.ndarray, int]:
    """``values`` as float32 and the power of two ``k`` they were scaled by: ``values ~ result * 2**k``.

    ``k`` is 0 (a plain cast) unless a float image's largest magnitude (or
    ``reference``'s) lies outside ``2**-SAFE_EXPONENT .. 2**SAFE_EXPONENT``,
    where a plain cast would overflow to inf or flush the pixels to zero.
    Such an image is scaled by ``2**-k`` first, which is exact, and every
    later step (percentiles, Otsu, normalisation) commutes with it, so the
    result does not depend on the image's units. Integers of any width fit
    float32 as they are.

    Parameters
    ----------
    values : array_like
        Intensities of a real dtype, any shape.
    reference : float, optional
        A magnitude that must fit too (the ``value_range`` a block is normalised with).

    Returns
    -------
    arr : ndarray
        float32, shape of ``values`` (not copied when already float32 and ``k`` is 0).
    k : int
        The exponent; multiply ranges in ``arr``'s units by ``2**k`` for image units.
    """
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.floating):
        return np.asarray(arr, np.float32), 0
    k = _exponent(arr, reference)
    if abs(k) <= SAFE_EXPONENT:
        return np.asarray(arr, np.float32), 0
    return np.ldexp(arr, -k).astype(np.float32), k


def _exponent(arr: np.ndarray, reference: float = 0.0) -> int:
    """``k`` with the largest magnitude of ``arr`` and ``reference`` in ``[2**(k-1), 2**k)``; 0 for zeros or non-finite."""
    top = abs(float(reference))
    if arr.size:
        top = max(top, abs(float(arr.max())), abs(float(arr.min())))
    return math.frexp(top)[1] if math.isfinite(top) else 0


def otsu_threshold(image: np.ndarray) -> float:
    """Otsu's threshold of ``image``, whatever its magnitude.

    skimage sums ``count * value**2`` in float32, which overflows (a
    RuntimeWarning and a wrong threshold) for values beyond about 2**30 and
    underflows for tiny ones. Such an image is thresholded scaled by a power
    of two (exact; the threshold scales back exactly); others as they are.

    Parameters
    ----------
    image : ndarray
        Finite intensities, any shape.

    Returns
    -------
    float
        The threshold, in the units of ``image``.
    """
    from skimage.filters import threshold_otsu

    k = _exponent(image)
    if abs(k) <= OTSU_EXPONENT:
        return threshold_otsu(image)
    return math.ldexp(float(threshold_otsu(np.ldexp(image, -k))), k)


def percentile_range(values: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float]:
    """``(lo, hi)``: the ``percentiles`` of ``values``, unless saturation or debris would set ``hi``.

    When the high percentile equals the maximum, more than 0.2% of the
    pixels sit exactly at it: a saturated camera, a clipped 8/12/16-bit
    range, bright debris. Those pixels are then left out, because otherwise
    they set ``hi`` and darken every nucleus (measured effect: see
    docs/performance.md). Falls back to all pixels when the rest is
    constant (a two-level image). For a 2D image, objects far brighter than
    its nuclei (:func:`bright_outliers`) are left out too.

    Parameters
    ----------
    values : ndarray
        Pixel values, any shape (a 2D image also gets the debris rule).
    percentiles : tuple of float, optional
        Low and high percentile, in [0, 100].

    Returns
    -------
    lo, hi : float
        Intensities in the units of ``values`` (any magnitude: see :func:`float32_view`).
    """
    arr, k = float32_view(values)
    lo, clip, hi = np.percentile(arr, (percentiles[0], OTSU_CLIP_PERCENTILE, percentiles[1]))  # one sort
    keep = None
    top = arr.max()
    if hi >= top:
        keep = arr < top
        lo, hi = _range_of(arr, keep, percentiles, (lo, hi))
    if arr.ndim == 2:
        debris = bright_outliers(arr, float(lo), float(hi), clip=float(clip))
        if debris is not None:
            lo, hi = _range_of(arr, ~debris if keep is None else keep & ~debris, percentiles, (lo, hi))
    return math.ldexp(float(lo), k), math.ldexp(float(hi), k)


def _range_of(arr: np.ndarray, keep: np.ndarray, percentiles: tuple[float, float],
              fallback: tuple[float, float]) -> tuple[float, float]:
    """The percentiles of ``arr[keep]``, or ``fallback`` when nothing or a constant is left."""
    if not keep.any():
        return fallback
    lo, hi = np.percentile(arr[keep], percentiles)
    return (lo, hi) if hi > lo else fallback


def bright_outliers(image: np.ndarray, lo: float, hi: float, clip: float | None = None) -> np.ndarray | None:
    """Mask of pixels far brighter than the image's nuclei (debris, dust), or None when there are none.

    Objects: connected components above Otsu's threshold of the image
    clipped at its 99th percentile (so bright debris cannot pull the
    threshold above the nuclei). Their brightness is the mean above ``lo``;
    the typical nucleus is the median object pixel (area weighted, so noise
    specks do not count). Outliers are the pixels more than DEBRIS_RATIO
    times that typical brightness above ``lo``, when they are at least
    0.05% of the image (a few hot pixels do not move the 99.8th
    percentile) and at most half of the object pixels (otherwise they are
    the nuclei). Why: debris would set the high percentile and darken the
    nuclei (measured effect: see docs/performance.md).

    Parameters
    ----------
    image : (H, W) float ndarray
        The image.
    lo, hi : float
        Its low and high percentiles (image units).
    clip : float, optional
        The image's OTSU_CLIP_PERCENTILE when the caller has it (saves a sort).

    Returns
    -------
    (H, W) bool ndarray or None
        True on debris pixels; None when the rule does not fire.
    """
    from scipy import ndimage

    if clip is None:
        clip = float(np.percentile(image, OTSU_CLIP_PERCENTILE))
    clipped = np.minimum(image, min(hi, clip))
    if clipped.max() <= clipped.min():
        return None
    objects, n = ndimage.label(image > otsu_threshold(clipped))
    if n < 3:
        return None
    area = np.bincount(objects.ravel(), minlength=n + 1)[1:].astype(np.float64)
    brightness = np.bincount(objects.ravel(), weights=image.ravel(), minlength=n + 1)[1:] / area - lo
    order = np.argsort(brightness)
    median = brightness[order][np.searchsorted(np.cumsum(area[order]) / area.sum(), 0.5)]
    if median <= 0:
        return None
    out = image - lo > DEBRIS_RATIO * median
    count = int(out.sum())
    if count < DEBRIS_MIN_FRACTION * image.size or count > DEBRIS_MAX_SHARE * area.sum():
        return None
    return out


def intensity_range(image, percentiles: tuple[float, float] = PERCENTILES, max_samples: int = 1 << 22) -> tuple[float, float]:
    """:func:`percentile_range` of ``image`` (numpy, zarr or dask), from a regular subsample of at most ``max_samples`` px.

    Large images are normalised with one range for all their blocks, so an
    empty block is not stretched into false nuclei.

    Parameters
    ----------
    image : (H, W) array_like
        numpy, zarr or dask array; only the subsample is read.
    percentiles : tuple of float, optional
        Low and high percentile, in [0, 100].
    max_samples : int, optional
        Pixels read at most (every ``step``-th row and column).

    Returns
    -------
    lo, hi : float
        Intensities in image units, for ``normalize(..., value_range=)``.
    """
    h, w = image.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / max_samples))))
    sample = image[::step, ::step]
    return percentile_range(as_numpy(sample), percentiles)


def normalize(
    image: np.ndarray,
    percentiles: tuple[float, float] = PERCENTILES,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Percentile-normalised float32 copy: the low percentile maps to 0, the high one to 1.

    The network was trained on images normalised this way, so the 8/16-bit
    and float ranges of real microscopes all look alike to it; saturated
    pixels and debris are handled by :func:`percentile_range`. A constant
    image maps to all zeros (no nuclei, no error). The result does not
    depend on the image's units (a power-of-two scaling gives the same
    output, see :func:`float32_view`).

    Parameters
    ----------
    image : ndarray
        Intensities, any shape and real dtype (usually ``(H, W)``).
    percentiles : tuple of float, optional
        Low and high percentile, in [0, 100].
    value_range : tuple of float, optional
        ``(lo, hi)`` in image units, instead of the image's own percentiles
        (see :func:`intensity_range`).

    Returns
    -------
    ndarray
        float32, shape of ``image``; not clipped to [0, 1], so values may
        leave it, but kept within ``+-NORM_LIMIT``.
    """
    if value_range is None:
        arr, k = float32_view(image)
        lo, hi = percentile_range(arr, percentiles)
    else:
        arr, k = float32_view(image, max(abs(value_range[0]), abs(value_range[1])))
        lo, hi = math.ldexp(float(value_range[0]), -k), math.ldexp(float(value_range[1]), -k)
    if not hi - lo > 1e-12 * max(abs(hi), abs(lo)):
        return np.zeros(arr.shape, np.float32)
    return _stretch(arr, lo, hi)


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(arr - lo) / (hi - lo)`` as float32, clipped to ``+-NORM_LIMIT`` (``hi > lo``)."""
    if hi - lo >= 2.0**-SAFE_EXPONENT:  # float32 holds the range: the arithmetic the network was trained with
        with np.errstate(over="ignore"):  # a pixel beyond float32 after the stretch is clipped just below
            out = (arr - np.float32(lo)) / np.float32(hi - lo)
        return np.clip(out, -NORM_LIMIT, NORM_LIMIT, out=out)
    # a range under float32's resolution beside much larger pixels (lo, hi tiny): float64
    return np.clip((arr.astype(np.float64) - lo) / (hi - lo), -NORM_LIMIT, NORM_LIMIT).astype(np.float32)
