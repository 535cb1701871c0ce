"""Image files: reading input images (TIFF, PNG, NPY, Zarr arrays) and writing label image files (TIFF, NPY)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hts.engine.preprocess import check_image
from hts.errors import HtsError
from hts.io.atomic import atomic_write
from hts.io.channels import read_planes, select_channel
from hts.io.planes import PlaneView

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def open_image(path: str | os.PathLike, channel: str | int | None = None, *, option: str = "channel"):
    """A 2D image from a file (read now) or a Zarr array (read lazily, region by region).

    A Zarr group is accepted when it holds an array ``0`` (the
    full-resolution level of a multiscale image). Singleton axes of a Zarr
    array (e.g. ``(1, 1, H, W)``) are hidden by a :class:`PlaneView`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tif/.tiff``, ``.png`` or ``.npy`` file (:func:`read_image`), or a
        ``.zarr`` array or group.
    channel : str, int or None
        For a file, the channel to read (:func:`read_image`); not for Zarr
        (an OME-Zarr image's channels: ``hts run --channel``).
    option : str
        How the caller spells ``channel``, for error messages.

    Returns
    -------
    numpy.ndarray, zarr.Array or PlaneView
        ``(H, W)`` intensities in the file's dtype (integer or float), in the
        file's units. Files are returned as numpy; Zarr stays lazy (``shape``,
        ``dtype`` and slicing; :func:`hts.engine.preprocess.as_numpy` reads
        a slice).

    Raises
    ------
    HtsError
        A missing or unreadable store, a group without ``0``, an array
        that is not 2D once its singleton axes are removed, or a channel
        asked of a Zarr store.
    """
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        return read_image(path, channel, option=option)
    if channel is not None:
        raise HtsError(f"{path}: {option} applies to TIFF, PNG and NPY files; a Zarr array here is one 2D plane "
                       "(for the channels of an OME-Zarr image use hts run --channel)")
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
    return node if len(node.shape) == 2 else PlaneView(node)


def read_image(path: str | os.PathLike, channel: str | int | None = None, *, option: str = "channel") -> np.ndarray:
    """A 2D image from a ``.tif/.tiff``, ``.png`` or ``.npy`` file, checked by :func:`check_image`.

    Singleton axes (e.g. a ``(1, H, W)`` TIFF page stack) are squeezed away.
    Of a multi-channel file (a multi-channel TIFF, an OME-TIFF, an ImageJ
    hyperstack, RGB(A)) one channel is read: ``channel``, or the only one,
    or grey saved as RGB; z or time stacks are refused
    (:mod:`hts.io.channels` has the rules), with a one-line error naming the file.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    channel : str, int or None
        The nucleus channel: a 0-based index, or a name (OME-TIFF channel
        ``Name``, ImageJ label, ``R``/``G``/``B`` or ``red``/``green``/``blue``
        for RGB; case-insensitive); None for the only channel.
    option : str
        How the caller spells ``channel``, for error messages (``"--channel"`` on the command line).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` intensities in the file's dtype (integer or float).

    Raises
    ------
    HtsError
        An unsupported suffix, a missing or unreadable file, a channel
        :func:`hts.io.channels.select_channel` refuses, or an image
        :func:`check_image` refuses.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise HtsError(f"{path}: unsupported image format {suffix or '(none)'}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise HtsError(f"{path}: no such file")
    planes = read_planes(path)
    return check_image(select_channel(planes, channel, name=str(path), option=option), name=str(path))


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
