"""NGFF pyramids in the image's axes: level arrays, ``multiscales`` and ``omero`` metadata.

An output array follows its image: labels take the image's axes without
``c``, a copied channel keeps them all, and every axis but ``y, x`` has size
1 (one 2D plane is segmented). Levels mirror the image's ``y, x`` level
shapes, chunks and scales, nearest-neighbour downsampled. Metadata is written
with ``ome-zarr-py``; pixel arrays go through ``zarr`` directly. Label groups
and the output plate are :mod:`hts.io.ngff_write`.
"""

from __future__ import annotations

import numpy as np
import zarr
from ome_zarr.format import Format
from ome_zarr.writer import add_metadata, write_multiscales_metadata

from hts.io.ngff_image import AXIS_TYPES, ImageInfo, level_shapes
from hts.io.planes import PlaneView, trailing_plane


def downsample_to(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a 2D array to ``shape`` (labels stay labels)."""
    return downsample_region(labels, shape, (0, shape[0]), (0, shape[1]))


def downsample_region(array, shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Rows ``[r0, r1)`` x columns ``[c0, c1)`` of :func:`downsample_to` ``(array, shape)``.

    Reads only the window of ``array`` (numpy or zarr, 2D) that those output
    pixels come from: output pixel ``(y, x)`` is ``array[y * H // shape[0],
    x * W // shape[1]]``.
    """
    h, w = array.shape
    r = (np.arange(*rows) * h) // shape[0]
    c = (np.arange(*cols) * w) // shape[1]
    if r.size == 0 or c.size == 0:
        return np.zeros((r.size, c.size), array.dtype)
    window = np.asarray(array[r[0] : r[-1] + 1, c[0] : c[-1] + 1])
    return window[np.ix_(r - r[0], c - c[0])]


def output_axes(info: ImageInfo, keep_channel: bool = False) -> tuple[dict, ...]:
    """The ``axes`` of an output array that follows the image: all its axes, without ``c`` for labels.

    Labels take the image's non-channel axes (iohub's and ome-zarr-py's
    convention, e.g. ``(t, z, y, x)`` for a ``(t, c, z, y, x)`` image); a
    copied channel keeps every axis, ``c`` included. Entries keep the
    image's ``type`` and ``unit``.

    Parameters
    ----------
    info : ImageInfo
        The input image's :func:`~hts.io.ngff_image.image_info`.
    keep_channel : bool
        Keep the ``c`` axis (a copied channel) or drop it (labels).
    """
    meta = info.axis_meta or tuple({"name": n, "type": AXIS_TYPES.get(n, "space")} for n in info.axes)
    return tuple(dict(a) for a in meta if keep_channel or a["name"].lower() != "c")


def _plane_shape(info: ImageInfo, axes: tuple[dict, ...], yx: tuple[int, int],
                 sizes: dict[str, int] | None = None) -> tuple[int, ...]:
    """``yx`` on the ``y, x`` axes, ``sizes`` (e.g. ``{"t": 6}``) or 1 on every other, in the image's axes."""
    return tuple({**(sizes or {}), **dict(zip("yx", yx))}.get(a["name"].lower(), 1) for a in axes)


def _create_array(group: zarr.Group, name: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...],
                  names: list[str], fmt: Format) -> zarr.Array:
    kwargs = {"dimension_names": names} if fmt.zarr_format == 3 else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    chunks = tuple(max(min(c, s), 1) for c, s in zip(chunks, shape))
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, overwrite=True, **kwargs)


def create_levels(group: zarr.Group, info: ImageInfo, fmt: Format, dtype, keep_channel: bool = False,
                  sizes: dict[str, int] | None = None) -> list[PlaneView]:
    """Empty arrays ``0..L-1`` in the image's axes (:func:`output_axes`), one ``(y, x)`` plane each.

    Every axis but ``y`` and ``x`` has size 1: the arrays hold one 2D plane
    (a segmentation of the t = 0, z-projected plane, or a copied channel);
    with ``sizes`` (label volumes, e.g. ``{"t": 6, "z": 16}``) those axes
    have that size, chunked one plane at a time, and no views are returned
    (a volume is written with :mod:`hts.io.ngff_volume`).

    Parameters
    ----------
    group : zarr.Group
        Where the arrays are created (existing ones are replaced).
    info : ImageInfo
        The image whose levels are mirrored: its ``y, x`` level shapes and chunks.
    fmt : ome_zarr.format.Format
        The NGFF version written (Zarr v2 for 0.4, v3 for 0.5).
    dtype : numpy dtype
        Of the arrays (fill value 0).
    keep_channel : bool
        Keep a (singleton) ``c`` axis: True for a copied channel, False for labels.
    sizes : dict of str to int, optional
        Sizes of non-``y, x`` axes (lower-case names); default 1.

    Returns
    -------
    list of PlaneView
        One per level: the ``(y, x)`` plane (``level_shapes(info)[i]``) of
        the array, indexed and written as 2D.
    """
    axes = output_axes(info, keep_channel)
    names = [a["name"] for a in axes]
    chunks = _plane_shape(info, axes, info.chunks_yx)
    arrays = [_create_array(group, str(level), _plane_shape(info, axes, shape, sizes), dtype, chunks, names, fmt)
              for level, shape in enumerate(level_shapes(info))]
    return [] if sizes and any(v > 1 for v in sizes.values()) else [trailing_plane(a) for a in arrays]


def write_multiscales(group: zarr.Group, info: ImageInfo, fmt: Format, name: str, keep_channel: bool = False) -> None:
    """The ``multiscales`` metadata of the pyramid in ``group``, with the image's axes and level scales.

    Parameters
    ----------
    group : zarr.Group
        Holds arrays ``0..L-1`` (:func:`create_levels`).
    info : ImageInfo
        The image whose axes and scales are written (:func:`output_axes`).
    fmt : ome_zarr.format.Format
        The NGFF version.
    name : str
        The multiscale's name.
    keep_channel : bool
        As in :func:`create_levels`.
    """
    axes = output_axes(info, keep_channel)
    datasets = [{"path": str(level), "coordinateTransformations": [
        {"type": "scale", "scale": [info.axis_scale(a["name"].lower(), level) for a in axes]}]}
        for level in range(len(info.levels))]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=list(axes), name=name)


def omero_channel(info: ImageInfo, channel: int, plane: np.ndarray) -> dict:
    """The ``omero`` entry of the copied ``channel``: the input's (label, color, window, ...), completed.

    NGFF readers name channels from it (bioio, napari); ``color`` and
    ``window`` are required by the schema, so missing ones are filled in
    (white; the plane's range).

    Parameters
    ----------
    info : ImageInfo
        The input image's :func:`~hts.io.ngff_image.image_info`.
    channel : int
        The index of the copied channel.
    plane : numpy.ndarray
        The copied plane (for a missing window).

    Returns
    -------
    dict
        A JSON-able omero channel.
    """
    entry = dict(info.channel_meta[channel]) if channel < len(info.channel_meta) else {}
    lo, hi = (float(plane.min()), float(plane.max())) if plane.size else (0.0, 0.0)
    window = entry.get("window") if isinstance(entry.get("window"), dict) else {}
    entry["window"] = {"min": lo, "max": hi, "start": lo, "end": hi} | window
    entry.setdefault("color", "FFFFFF")
    entry.setdefault("label", info.channels[channel] if channel < len(info.channels) else f"c{channel}")
    entry.setdefault("active", True)
    return entry


def write_pyramid(group: zarr.Group, plane: np.ndarray, info: ImageInfo, fmt: Format, name: str,
                  channel: int | None = None) -> None:
    """``plane`` and its downsampled levels as a multiscale in the image's axes in ``group``, metadata last.

    Parameters
    ----------
    group : zarr.Group
        Receives arrays ``0..L-1`` and their ``multiscales`` metadata.
    plane : numpy.ndarray
        ``(H, W)``, the full-resolution level; its dtype is kept.
    info : ImageInfo
        The image whose level shapes, chunks and scales are used.
    fmt : ome_zarr.format.Format
        The NGFF version.
    name : str
        The multiscale's name.
    channel : int, optional
        The input channel ``plane`` is: its ``omero`` entry is written
        (:func:`omero_channel`), so readers keep its name.
    """
    for level, arr in enumerate(create_levels(group, info, fmt, plane.dtype, keep_channel=True)):
        arr[...] = plane if level == 0 else downsample_to(plane, arr.shape)
    write_multiscales(group, info, fmt, name, keep_channel=True)
    if channel is not None:
        write_omero(group, info, fmt, channel, plane)


def write_omero(group: zarr.Group, info: ImageInfo, fmt: Format, channel: int, plane: np.ndarray) -> None:
    """The ``omero`` metadata of a one-channel output image copied from ``channel`` (:func:`omero_channel`)."""
    add_metadata(group, {"omero": {"channels": [omero_channel(info, channel, plane)]}}, fmt=fmt)
