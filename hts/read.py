"""Reading input images from files (TIFF, PNG, NPY)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hts.errors import HtsError
from hts.preprocess import check_image

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A 2D image from a ``.tif/.tiff``, ``.png`` or ``.npy`` file, checked by :func:`check_image`.

    Singleton axes (e.g. a ``(1, H, W)`` TIFF page stack) are squeezed away;
    RGB or multi-plane data is refused with a one-line error naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise HtsError(f"{path}: unsupported image format {suffix or '(none)'}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise HtsError(f"{path}: no such file")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".png":
            from skimage.io import imread

            arr = imread(path)
        else:
            import tifffile

            arr = tifffile.imread(path)
    except Exception as exc:
        raise HtsError(f"{path}: cannot read image ({type(exc).__name__}: {str(exc)[:100]})") from None
    arr = np.asarray(arr)
    if arr.ndim > 2:
        arr = np.squeeze(arr)
    return check_image(arr, name=str(path))
