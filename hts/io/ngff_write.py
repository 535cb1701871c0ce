"""OME-Zarr (NGFF 0.4 / 0.5) output: label pyramids, multiscales metadata, the output plate.

Metadata is written with ``ome-zarr-py``; pixel arrays go through ``zarr``
directly so each field is written by one task without a nested Dask
computation. Reading the input is :mod:`hts.io.ngff`.

Choices (documented in the README): labels are 2D ``(y, x)`` uint32 arrays
at ``<image>/labels/nuclei/<level>``, one level per image level with the
same ``y, x`` shape, nearest-neighbour downsampled, chunked like the image's
``y, x`` chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import Format
from ome_zarr.writer import (
    add_metadata,
    write_label_metadata,
    write_multiscales_metadata,
    write_plate_metadata,
    write_well_metadata,
)

from hts.errors import HtsError
from hts.io.ngff import LABEL_NAME, ImageInfo, Source, _first_error, _ome, level_shapes


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


def _yx_axes() -> list[dict]:
    """The NGFF ``axes`` of a 2D ``(y, x)`` multiscale (the same in NGFF 0.4 and 0.5)."""
    return [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def _create_array(group: zarr.Group, name: str, shape: tuple[int, int], dtype, chunks: tuple[int, int],
                  fmt: Format) -> zarr.Array:
    kwargs = {"dimension_names": ["y", "x"]} if fmt.zarr_format == 3 else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    chunks = (max(min(chunks[0], shape[0]), 1), max(min(chunks[1], shape[1]), 1))
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, overwrite=True, **kwargs)


def create_levels(group: zarr.Group, info: ImageInfo, fmt: Format, dtype) -> list[zarr.Array]:
    """Empty 2D ``(y, x)`` arrays ``0..L-1`` with the image's level shapes and ``y, x`` chunks.

    Parameters
    ----------
    group : zarr.Group
        Where the arrays are created (existing ones are replaced).
    info : ImageInfo
        The image whose levels are mirrored.
    fmt : ome_zarr.format.Format
        The NGFF version written (Zarr v2 for 0.4, v3 for 0.5).
    dtype : numpy dtype
        Of the arrays (fill value 0).

    Returns
    -------
    list of zarr.Array
        One per level, ``level_shapes(info)[i]``.
    """
    return [_create_array(group, str(level), shape, dtype, info.chunks_yx, fmt)
            for level, shape in enumerate(level_shapes(info))]


def write_multiscales(group: zarr.Group, info: ImageInfo, fmt: Format, name: str) -> None:
    """The ``multiscales`` metadata of a 2D ``(y, x)`` pyramid in ``group``, with the image's level scales.

    Parameters
    ----------
    group : zarr.Group
        Holds arrays ``0..L-1`` (:func:`create_levels`).
    info : ImageInfo
        The image whose ``yx_scales`` are written.
    fmt : ome_zarr.format.Format
        The NGFF version.
    name : str
        The multiscale's name.
    """
    datasets = [{"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [sy, sx]}]}
                for level, (sy, sx) in enumerate(info.yx_scales)]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=_yx_axes(), name=name)


def write_pyramid(group: zarr.Group, plane: np.ndarray, info: ImageInfo, fmt: Format, name: str) -> None:
    """``plane`` and its downsampled levels as a 2D ``(y, x)`` multiscale in ``group``, metadata last.

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
    """
    for level, arr in enumerate(create_levels(group, info, fmt, plane.dtype)):
        arr[...] = plane if level == 0 else downsample_to(plane, arr.shape)
    write_multiscales(group, info, fmt, name)


def begin_labels(image: zarr.Group, info: ImageInfo, fmt: Format) -> tuple[zarr.Group, list[zarr.Array]]:
    """A fresh ``<image>/labels/nuclei`` (an earlier partial write is removed) with empty uint32 levels.

    Parameters
    ----------
    image : zarr.Group
        The image group (opened for writing).
    info : ImageInfo
        Its :func:`~hts.io.ngff.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.

    Returns
    -------
    group : zarr.Group
        ``<image>/labels/nuclei``, without metadata until :func:`finish_labels`.
    levels : list of zarr.Array
        Its uint32 ``(y, x)`` levels, zero-filled.
    """
    parent = image.require_group("labels")
    if LABEL_NAME in parent:
        del parent[LABEL_NAME]
    group = parent.create_group(LABEL_NAME)
    return group, create_levels(group, info, fmt, np.uint32)


def finish_labels(image: zarr.Group, info: ImageInfo, fmt: Format, properties: dict | None = None) -> None:
    """The NGFF metadata of ``<image>/labels/nuclei``, written after its arrays.

    Parameters
    ----------
    image : zarr.Group
        The image group holding ``labels/nuclei`` (:func:`begin_labels`).
    info : ImageInfo
        Its :func:`~hts.io.ngff.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    properties : dict, optional
        JSON-able values stored under ``image-label`` ``hts`` (e.g. ``n_nuclei``).
    """
    parent, group = image["labels"], image["labels"][LABEL_NAME]
    write_multiscales(group, info, fmt, LABEL_NAME)
    extra = {"source": {"image": "../../"}}
    if properties:
        extra["hts"] = properties
    if LABEL_NAME in _ome(parent).get("labels", []):
        add_metadata(group, {"image-label": {**extra, "version": fmt.version}}, fmt=fmt)
    else:
        write_label_metadata(parent, LABEL_NAME, fmt=fmt, **extra)
    stamp_version(parent, fmt)


def write_labels(image: zarr.Group, labels: np.ndarray, info: ImageInfo, fmt: Format, properties: dict | None = None) -> None:
    """Write ``labels`` as ``<image>/labels/nuclei`` (NGFF ``image-label``), replacing an earlier partial write.

    A label image file (TIFF, NPY) is :func:`hts.io.images.write_label_file`.

    Parameters
    ----------
    image : zarr.Group
        The image group (opened for writing).
    labels : numpy.ndarray
        ``(H, W)`` integer labels at full resolution, 0 = background
        (stored as uint32, one level per image level, nearest-neighbour
        downsampled).
    info : ImageInfo
        The image's :func:`~hts.io.ngff.image_info`.
    fmt : ome_zarr.format.Format
        The NGFF version.
    properties : dict, optional
        As in :func:`finish_labels`.
    """
    _, levels = begin_labels(image, info, fmt)
    for level, arr in enumerate(levels):
        arr[...] = labels if level == 0 else downsample_to(labels, arr.shape)
    finish_labels(image, info, fmt, properties)


def stamp_version(labels_group: zarr.Group, fmt: Format) -> None:
    """NGFF 0.5 wants ``ome.version`` in every group; ome-zarr-py leaves it out of the ``labels`` group.

    Parameters
    ----------
    labels_group : zarr.Group
        An image's ``labels`` group.
    fmt : ome_zarr.format.Format
        The NGFF version (nothing is written for 0.4).
    """
    if fmt.zarr_format == 3 and "version" not in _ome(labels_group):
        add_metadata(labels_group, {"version": fmt.version}, fmt=fmt)


def create_output(source: Source, out: str | os.PathLike) -> zarr.Group:
    """A new Zarr root at ``out`` with the plate/well structure of ``source`` (images are added per field).

    Parameters
    ----------
    source : Source
        The opened input (:func:`~hts.io.ngff.open_source`).
    out : str or os.PathLike
        The output root; an existing one is reused (metadata already there is kept).

    Returns
    -------
    zarr.Group
        The root, opened for writing, in the input's NGFF version.
    """
    fmt = source.fmt
    root = zarr.open_group(str(out), mode="a", zarr_format=fmt.zarr_format)
    if source.kind == "plate":
        plate = source.plate
        wells = [w["path"] for w in plate["wells"]]
        if "plate" not in _ome(root):
            write_plate_metadata(root, [r["name"] for r in plate["rows"]], [c["name"] for c in plate["columns"]],
                                 wells, fmt=fmt, field_count=plate.get("field_count"), name=plate.get("name"))
        by_well: dict[str, list[str]] = {}
        for f in source.fields:
            by_well.setdefault(f.well, []).append(f.field)
        for well, images in by_well.items():
            wg = root.require_group(well)
            if "well" not in _ome(wg):
                write_well_metadata(wg, images, fmt=fmt)
    return root


def open_output(source: Source, out: str | os.PathLike | None) -> zarr.Group:
    """The Zarr root that receives labels: the input itself, or a new tree at ``out``.

    Parameters
    ----------
    source : Source
        The opened input (:func:`~hts.io.ngff.open_source`).
    out : str, os.PathLike or None
        The output root; None (or the input's own path): write into the input.

    Returns
    -------
    zarr.Group
        The root, opened for writing.

    Raises
    ------
    HtsError
        The input is not writable, or ``out`` exists and is not a Zarr group.
    """
    if out is None or Path(out).resolve() == source.path.resolve():
        try:
            return zarr.open_group(str(source.path), mode="r+")
        except Exception as e:
            raise HtsError(f"{source.path}: cannot write labels into the input ({_first_error(e)}); use --out") from None
    if Path(out).exists() and not (Path(out) / ".zgroup").exists() and not (Path(out) / "zarr.json").exists():
        raise HtsError(f"--out {out}: exists and is not a Zarr group")
    return create_output(source, out)
