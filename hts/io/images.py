"""Image files: reading input images (TIFF, PNG, NPY, Zarr arrays) and writing label image files (TIFF, NPY)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hts.engine.preprocess import check_image
from hts.errors import HtsError
from hts.io.atomic import atomic_write

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


class SqueezedArray:
    """A lazy 2D view of an array with singleton axes, e.g. a ``(1, 1, H, W)`` Zarr array as ``(H, W)``.

    Indexing reads only the requested region: a 2D key is indexed into the
    underlying array with every singleton axis fixed at 0.

    Parameters
    ----------
    array : zarr.Array or array-like
        Anything with ``shape``, ``dtype`` and numpy-style basic indexing,
        with exactly two axes longer than 1.
    """

    def __init__(self, array) -> None:
        self.array = array
        self._keep = tuple(s != 1 for s in array.shape)
        self.shape = tuple(int(s) for s, k in zip(array.shape, self._keep) if k)
        if len(self.shape) != 2:
            raise HtsError(f"expected a 2D image, got shape {tuple(array.shape)}")
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2

    def __repr__(self) -> str:
        return f"<SqueezedArray {self.shape} {self.dtype} of {tuple(self.array.shape)}>"

    def __getitem__(self, key):
        """The region ``key`` (up to two slices or ints, ``...`` allowed) read now, as numpy."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (2 - len(key) + 1) + key[i + 1 :]
        if len(key) > 2:
            raise IndexError(f"too many indices for a 2D array: {len(key)}")
        rest = iter(key + (slice(None),) * (2 - len(key)))
        return np.asarray(self.array[tuple(next(rest) if keep else 0 for keep in self._keep)])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)


def open_image(path: str | os.PathLike):
    """A 2D image from a file (read now) or a Zarr array (read lazily, region by region).

    A Zarr group is accepted when it holds an array ``0`` (the
    full-resolution level of a multiscale image). Singleton axes of a Zarr
    array (e.g. ``(1, 1, H, W)``) are hidden by a :class:`SqueezedArray`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif/.tiff``, ``.png`` or ``.npy`` file (:func:`read_image`), or a
        ``.zarr`` array or group.

    Returns
    -------
    numpy.ndarray, zarr.Array or SqueezedArray
        ``(H, W)`` intensities in the file's dtype (integer or float), in the
        file's units. Files are returned as numpy; Zarr stays lazy (``shape``,
        ``dtype`` and slicing; :func:`hts.engine.preprocess.as_numpy` reads
        a slice).

    Raises
    ------
    HtsError
        A missing or unreadable store, a group without ``0``, or an array
        that is not 2D once its singleton axes are removed.
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
    if len([s for s in node.shape if s != 1]) != 2:
        raise HtsError(f"{path}: expected a 2D image, got shape {tuple(node.shape)}")
    return node if len(node.shape) == 2 else SqueezedArray(node)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A 2D image from a ``.tif/.tiff``, ``.png`` or ``.npy`` file, checked by :func:`check_image`.

    Singleton axes (e.g. a ``(1, H, W)`` TIFF page stack) are squeezed away;
    RGB or multi-plane data is refused with a one-line error naming the file.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` intensities in the file's dtype (integer or float).

    Raises
    ------
    HtsError
        An unsupported suffix, a missing or unreadable file, or an image
        :func:`check_image` refuses.
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
    """Refuse an output path we cannot write, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        Where a label image file is to be written.

    Returns
    -------
    pathlib.Path
        ``path``, with a suffix in :data:`LABEL_SUFFIXES` and an existing folder.

    Raises
    ------
    HtsError
        Another suffix, or a folder that does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise HtsError(f"{path}: unsupported label format {suffix or '(none)'}; use one of {', '.join(LABEL_SUFFIXES)}")
    if not path.parent.is_dir():
        raise HtsError(f"{path}: folder {path.parent} does not exist")
    return path


def write_label_file(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label image file: ``.tif/.tiff`` (zlib-compressed) or ``.npy``.

    Written atomically (:func:`hts.io.atomic.atomic_write`): an interrupted
    write never leaves a partial file under ``path``. (NGFF labels inside an
    OME-Zarr image: :func:`hts.io.ngff_write.write_labels`.)

    Parameters
    ----------
    path : str or os.PathLike
        The file; checked by :func:`check_label_path`.
    labels : numpy.ndarray
        ``(H, W)`` integer labels, 0 = background; stored as uint32.
    """
    path = check_label_path(path)
    labels = np.asarray(labels, np.uint32)
    if path.suffix.lower() == ".npy":
        atomic_write(path, lambda f: np.save(f, labels))
    else:
        import tifffile

        atomic_write(path, lambda f: tifffile.imwrite(f, labels, compression="zlib"))
