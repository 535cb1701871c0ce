"""Image files: reading input images (TIFF, PNG, NPY, Zarr arrays) and writing label images (TIFF, NPY)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from hts.engine.preprocess import check_image
from hts.errors import HtsError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def open_image(path: str | os.PathLike):
    """A 2D image from a file (numpy, read now) or a Zarr array (zarr, read lazily block by block).

    A Zarr group is accepted when it holds a 2D array ``0`` (the full-resolution
    level of a multiscale image).
    """
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        return read_image(path)
    import zarr

    if not path.exists():
        raise HtsError(f"{path}: no such Zarr store")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise HtsError(f"{path}: not a readable Zarr store ({type(exc).__name__}: {str(exc)[:100]})") from None
    if isinstance(node, zarr.Group):
        if "0" not in node:
            raise HtsError(f"{path}: Zarr group without a full-resolution array '0'")
        node = node["0"]
    squeezed = [s for s in node.shape if s != 1]
    if len(squeezed) != 2:
        raise HtsError(f"{path}: expected a 2D image, got shape {tuple(node.shape)}")
    if len(node.shape) != 2:
        import dask.array as da

        return da.from_zarr(node).reshape(squeezed)
    return node


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

LABEL_SUFFIXES = (".tif", ".tiff", ".npy")


def check_label_path(path: str | os.PathLike) -> Path:
    """Refuse an output path we cannot write, before any work is done."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise HtsError(f"{path}: unsupported label format {suffix or '(none)'}; use one of {', '.join(LABEL_SUFFIXES)}")
    if not path.parent.is_dir():
        raise HtsError(f"{path}: folder {path.parent} does not exist")
    return path


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write uint32 ``labels`` to ``.tif/.tiff`` (zlib-compressed) or ``.npy``.

    Written to a temporary file in the same folder, then renamed: an
    interrupted write never leaves a partial file under ``path``.
    """
    path = check_label_path(path)
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".npy":
            np.save(tmp, np.asarray(labels, np.uint32))
        else:
            import tifffile

            tifffile.imwrite(tmp, np.asarray(labels, np.uint32), compression="zlib")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
