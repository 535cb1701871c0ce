"""Label volumes: ``labels/nuclei`` with every time point (and z-plane) of an image, written one time point at a time.

A time series (``hts run --t``) or a z-stack segmented plane by plane
(``--z all``) gets one label image with the image's axes without ``c``
(``(t, z, y, x)`` for ``tczyx``; an axis not segmented has size 1), chunked
one ``(y, x)`` plane per chunk row, the image's pyramid levels. It is
created empty (zeros) and installed in one step before the first time point
of the field is written (:func:`ensure_label_volume`); each time point then
writes its own planes (:func:`write_time_point`), chunk by chunk: zarr
writes each chunk file under a temporary name and renames it into place, so
at every instant a chunk holds the old plane or the new one. Which time
points are done is the results folder's business (a done marker per field
and time point, :mod:`hts.io.results`), as for 2D fields.
"""

from __future__ import annotations

import numpy as np
import zarr
from ome_zarr.format import Format

from hts.io.ngff_image import ImageInfo, level_shapes
from hts.io.ngff_meta import LABEL_NAME, ome_attrs
from hts.io.ngff_pyramid import downsample_to, output_axes
from hts.io.staging import fs_path


def volume_sizes(info: ImageInfo, z_all: bool) -> dict[str, int]:
    """The sizes of the label volume's ``t`` and ``z`` axes: the image's ``t``; its ``z`` with ``z_all``, else 1.

    Parameters
    ----------
    info : ImageInfo
        The image.
    z_all : bool
        Every z-plane segmented (``--z all``).

    Returns
    -------
    dict of str to int
        ``{"t": T, "z": Z}`` for the axes the image has.
    """
    sizes = {}
    if "t" in info.axes:
        sizes["t"] = info.axis_size("t")
    if "z" in info.axes:
        sizes["z"] = info.axis_size("z") if z_all else 1
    return sizes


def _level0_shape(info: ImageInfo, sizes: dict[str, int]) -> tuple[int, ...]:
    yx = dict(zip("yx", level_shapes(info)[0]))
    return tuple({**sizes, **yx}.get(a["name"].lower(), 1) for a in output_axes(info))


def has_label_volume(image: zarr.Group, info: ImageInfo, sizes: dict[str, int]) -> bool:
    """Whether ``<image>/labels/nuclei`` is a complete label image of the volume's shape."""
    try:
        group = zarr.open_group(str(fs_path(image) / "labels" / LABEL_NAME), mode="r")
        attrs = ome_attrs(group)
        path = attrs["multiscales"][0]["datasets"][0]["path"]
        return "image-label" in attrs and tuple(group[path].shape) == _level0_shape(info, sizes)
    except Exception:  # noqa: BLE001  # absent, unreadable or another shape
        return False


def ensure_label_volume(image: zarr.Group, info: ImageInfo, fmt: Format, sizes: dict[str, int]) -> bool:
    """Install an all-zero label volume at ``<image>/labels/nuclei`` unless one of this shape is there.

    Parameters
    ----------
    image : zarr.Group
        The output image group.
    info : ImageInfo
        The input image's :func:`~hts.io.ngff_image.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    sizes : dict of str to int
        :func:`volume_sizes`.

    Returns
    -------
    bool
        True when a new volume was installed (False: the existing one is kept, with the planes written so far).
    """
    from hts.io.ngff_write import abort_labels, begin_labels, finish_labels

    if has_label_volume(image, info, sizes):
        return False
    stage, _ = begin_labels(image, info, fmt, sizes)
    try:
        finish_labels(stage, info, fmt, {"volume": sizes})
    except BaseException:
        abort_labels(stage)
        raise
    return True


def write_time_point(image: zarr.Group, info: ImageInfo, t: int | None, labels: np.ndarray) -> None:
    """Write the labels of one time point into every level of the installed label volume.

    Parameters
    ----------
    image : zarr.Group
        The output image group (its ``labels/nuclei`` from :func:`ensure_label_volume`).
    info : ImageInfo
        The input image.
    t : int or None
        The time point (None: the image has no ``t`` axis).
    labels : (Z, H, W) or (H, W) uint32 ndarray
        The planes of this time point at full resolution (Z the volume's z size).
    """
    group = zarr.open_group(str(fs_path(image) / "labels" / LABEL_NAME), mode="r+")
    names = [a["name"].lower() for a in output_axes(info)]
    stack = labels if labels.ndim == 3 else labels[None]
    for level, shape in enumerate(level_shapes(info)):
        arr = group[str(level)]
        planes = stack if level == 0 else np.stack([downsample_to(p, shape) for p in stack])
        index = tuple(t if n == "t" else slice(None) if n in ("z", "y", "x") else 0 for n in names)
        block = tuple(size for n, size in zip(names, arr.shape) if n in ("z", "y", "x"))  # e.g. (Z, h, w)
        arr[index] = planes.reshape(block).astype(np.uint32)
