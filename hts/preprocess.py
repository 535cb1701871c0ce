"""Input checks and per-image normalisation, shared by training and inference."""

from __future__ import annotations

import numpy as np

from hts.errors import HtsError

PERCENTILES = (1.0, 99.8)


def check_image(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` as a 2D numeric numpy array or raise a one-line :class:`HtsError`.

    Refused: non-arrays that numpy cannot read as numbers, anything not 2D,
    empty arrays, bool/complex/object/string dtypes, NaN or inf pixels.
    ``name`` (a file or parameter) is named in the message.
    """
    try:
        arr = np.asarray(image)
    except Exception as exc:  # numpy raises many types for ragged input
        raise HtsError(f"{name}: cannot read as an array ({exc})") from None
    if arr.dtype == bool:
        raise HtsError(f"{name}: bool data is a mask, not an intensity image")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise HtsError(f"{name}: dtype {arr.dtype} is not a real numeric type")
    if arr.ndim != 2:
        raise HtsError(f"{name}: expected a 2D (height, width) image, got shape {arr.shape}")
    if arr.size == 0:
        raise HtsError(f"{name}: image is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise HtsError(f"{name}: image has NaN or infinite pixels")
    return arr


def as_numpy(array) -> np.ndarray:
    """A numpy array from a numpy, zarr or dask (slice of an) array, reading it now."""
    return np.asarray(array.compute() if hasattr(array, "compute") else array)


def intensity_range(image, percentiles: tuple[float, float] = PERCENTILES, max_samples: int = 1 << 22) -> tuple[float, float]:
    """The ``percentiles`` of ``image`` (numpy, zarr or dask), from a regular subsample of at most ``max_samples`` px.

    Large images are normalised with one range for all their blocks, so an
    empty block is not stretched into false nuclei.
    """
    h, w = image.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / max_samples))))
    sample = image[::step, ::step]
    sample = as_numpy(sample).astype(np.float32, copy=False)
    lo, hi = np.percentile(sample, percentiles)
    return float(lo), float(hi)


def normalize(
    image: np.ndarray,
    percentiles: tuple[float, float] = PERCENTILES,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Percentile-normalised float32 copy: the low percentile maps to 0, the high one to 1.

    Robust to the 8/16-bit and float ranges of real microscopes. A constant
    image maps to all zeros (no nuclei, no error). ``value_range`` gives
    ``(lo, hi)`` explicitly (see :func:`intensity_range`).
    """
    arr = np.asarray(image, np.float32)
    lo, hi = np.percentile(arr, percentiles) if value_range is None else value_range
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return np.zeros(arr.shape, np.float32)
    return (arr - np.float32(lo)) / np.float32(hi - lo)
