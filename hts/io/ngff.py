"""OME-Zarr (NGFF 0.4 / 0.5) layout: find the fields of a plate or image, read their nucleus plane, write labels.

Metadata is read and validated with ``ome-zarr-models`` and written with
``ome-zarr-py``; pixel arrays go through ``zarr`` directly so each field is
written by one task without a nested Dask computation.

Choices (documented in the README):

- the full-resolution level (the first ``multiscales`` dataset) is segmented;
- ``t``: the first time point; ``z > 1``: maximum projection, or one plane
  (``z=N``);
- labels are 2D ``(y, x)`` uint32 arrays at ``<image>/labels/nuclei/<level>``,
  one level per image level with the same ``y, x`` shape, nearest-neighbour
  downsampled, chunked like the image's ``y, x`` chunks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import (
    add_metadata,
    get_metadata,
    write_label_metadata,
    write_multiscales_metadata,
    write_plate_metadata,
    write_well_metadata,
)

from hts.errors import HtsError

LABEL_NAME = "nuclei"
FORMATS = {"0.4": FormatV04, "0.5": FormatV05}


@dataclass(frozen=True)
class FieldRef:
    """One image of the input: a plate field, or the whole image of a single-image Zarr."""

    path: str  # image group path inside the Zarr root ("" for a single image)
    well: str | None = None  # NGFF well path, e.g. "B/3"
    row: str | None = None
    column: str | None = None
    field: str | None = None  # field (image) path inside the well

    @property
    def key(self) -> str:
        """A name for task keys and files: ``B03-f2``, or ``image``."""
        if self.well is None:
            return "image"
        col = self.column.zfill(2) if self.column.isdigit() else self.column
        return f"{self.row}{col}-f{self.field}"


@dataclass
class Source:
    """An opened OME-Zarr input: what to segment, and what could not be."""

    path: Path
    kind: str  # "plate" or "image"
    version: str  # "0.4" or "0.5"
    fields: list[FieldRef]
    skipped: list[tuple[FieldRef, str]] = field(default_factory=list)
    plate: dict | None = None  # the plate metadata (rows, columns, wells, ...)

    @property
    def fmt(self) -> Format:
        return FORMATS[self.version]()


@dataclass(frozen=True)
class ImageInfo:
    """The ``multiscales`` of one image group: axes, level paths and shapes, y/x scales, channel names."""

    axes: tuple[str, ...]
    levels: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    yx_scales: tuple[tuple[float, float], ...]
    chunks_yx: tuple[int, int]
    channels: tuple[str, ...]

    def axis_size(self, name: str) -> int:
        return self.shapes[0][self.axes.index(name)] if name in self.axes else 1


def _open_group(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    p = Path(path)
    if not p.exists():
        raise HtsError(f"{p}: no such file or directory")
    try:
        return zarr.open_group(str(p), mode=mode)
    except Exception as e:  # zarr raises several types for "not a group here"
        raise HtsError(f"{p}: not a Zarr group ({type(e).__name__})") from None


def _ome(group: zarr.Group) -> dict:
    """The OME attributes of a group (under ``ome`` in NGFF 0.5, top level in 0.4)."""
    return get_metadata(group)


def _first_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(t.strip() for t in text[:3]) if text else type(exc).__name__


def open_source(path: str | os.PathLike) -> Source:
    """Open an OME-Zarr plate (plate -> row -> column -> field) or single multiscale image.

    Parameters
    ----------
    path : str or os.PathLike
        The Zarr root (NGFF 0.4 or 0.5).

    Returns
    -------
    Source
        Its kind, version and fields; a plate's wells that are listed but
        absent or empty are in ``skipped`` with the reason.

    Raises
    ------
    HtsError
        Not a Zarr group, neither a plate nor an image, or invalid NGFF
        metadata (the validator's first message).
    """
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v04 import HCS as HCS04
    from ome_zarr_models.v04 import Image as Image04
    from ome_zarr_models.v05 import HCS as HCS05
    from ome_zarr_models.v05 import Image as Image05

    root = _open_group(path)
    attrs = _ome(root)
    if "plate" not in attrs and "multiscales" not in attrs:
        raise HtsError(f"{path}: a Zarr group but neither an OME-Zarr plate nor an image (no 'plate' or 'multiscales' metadata)")
    what = "plate" if "plate" in attrs else "image"
    try:
        model = open_ome_zarr(root)
    except Exception as e:
        raise HtsError(f"{path}: invalid NGFF {what} metadata: {_first_error(e)}") from None
    if isinstance(model, (HCS04, HCS05)):
        version = "0.5" if isinstance(model, HCS05) else "0.4"
        return _plate_source(Path(path), root, attrs["plate"], version)
    if isinstance(model, (Image04, Image05)):
        version = "0.5" if isinstance(model, Image05) else "0.4"
        return Source(Path(path), "image", version, [FieldRef("")])
    raise HtsError(f"{path}: OME-Zarr {type(model).__name__} is neither a plate nor an image")


def _plate_source(path: Path, root: zarr.Group, plate: dict, version: str) -> Source:
    rows = [r["name"] for r in plate["rows"]]
    cols = [c["name"] for c in plate["columns"]]
    fields, skipped = [], []
    for well in plate["wells"]:
        wpath = well["path"]
        row, col = rows[well["rowIndex"]], cols[well["columnIndex"]]
        try:
            wgroup = root[wpath]
        except KeyError:
            skipped.append((FieldRef(wpath, wpath, row, col, "?"), f"well {wpath} is listed in the plate metadata but absent on disk"))
            continue
        images = _ome(wgroup).get("well", {}).get("images")
        if not images:
            skipped.append((FieldRef(wpath, wpath, row, col, "?"), f"well {wpath}: missing or empty 'well' metadata"))
            continue
        for im in images:
            fields.append(FieldRef(f"{wpath}/{im['path']}", wpath, row, col, str(im["path"])))
    return Source(path, "plate", version, fields, skipped, plate)


def image_info(group: zarr.Group, where: str = "") -> ImageInfo:
    """Axes, levels and channel names of an image group.

    Parameters
    ----------
    group : zarr.Group
        An NGFF image (or label image) group.
    where : str
        Its name for error messages.

    Returns
    -------
    ImageInfo
        Axis names, level paths and shapes, ``(y, x)`` scales of each level
        (physical units per px, as in the metadata; ``(1, 1)`` when absent),
        the full-resolution ``(y, x)`` chunks and the ``omero`` channel labels.

    Raises
    ------
    HtsError
        Missing or invalid ``multiscales``, no ``y``/``x`` axis, an absent
        dataset, or an array whose dimensions do not match the axes (naming
        ``where``).
    """
    attrs = _ome(group)
    try:
        ms = attrs["multiscales"][0]
        axes = tuple(a["name"] if isinstance(a, dict) else a for a in ms["axes"])
        levels = tuple(d["path"] for d in ms["datasets"])
    except (KeyError, IndexError, TypeError):
        raise HtsError(f"{where}: missing or invalid 'multiscales' metadata") from None
    if "y" not in axes or "x" not in axes:
        raise HtsError(f"{where}: axes {axes} have no 'y' and 'x'")
    shapes, scales = [], []
    iy, ix = axes.index("y"), axes.index("x")
    for d in ms["datasets"]:
        try:
            arr = group[d["path"]]
        except KeyError:
            raise HtsError(f"{where}: dataset {d['path']!r} listed in 'multiscales' is absent") from None
        shapes.append(tuple(int(s) for s in arr.shape))
        scale = next((t["scale"] for t in d.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
        scales.append((float(scale[iy]), float(scale[ix])) if scale else (1.0, 1.0))
    base = group[levels[0]]
    if len(base.shape) != len(axes):
        raise HtsError(f"{where}: array has {len(base.shape)} dimensions but metadata names axes {axes}")
    chunks = (int(base.chunks[iy]), int(base.chunks[ix]))
    omero = attrs.get("omero") or {}
    channels = tuple(str(c.get("label", "")) for c in omero.get("channels", []))
    return ImageInfo(axes, levels, tuple(shapes), tuple(scales), chunks, channels)


def resolve_channel(info: ImageInfo, channel: str | int | None, where: str = "") -> int:
    """The index on the ``c`` axis of the nucleus channel.

    Parameters
    ----------
    info : ImageInfo
        The image's :func:`image_info`.
    channel : str, int or None
        A channel label, an index (also as a string, e.g. ``"1"``), or None
        for the only channel.
    where : str
        The image's name for error messages.

    Returns
    -------
    int
        The index, ``0 <= index < info.axis_size("c")``.

    Raises
    ------
    HtsError
        None with several channels, an unknown label, or an index out of range.
    """
    n = info.axis_size("c")
    names = ", ".join(f"{i}={c}" for i, c in enumerate(info.channels)) or "unnamed"
    if channel is None:
        if n > 1:
            raise HtsError(f"{where}: {n} channels ({names}); choose the nucleus channel with --channel NAME|INDEX")
        return 0
    if isinstance(channel, str) and not channel.lstrip("-").isdigit():
        if channel not in info.channels:
            raise HtsError(f"{where}: channel {channel!r} does not exist (channels: {names})")
        return info.channels.index(channel)
    index = int(channel)
    if not 0 <= index < n:
        raise HtsError(f"{where}: channel index {index} out of range: the image has {n} channel(s) ({names})")
    return index


def read_plane(group: zarr.Group, info: ImageInfo, channel: int, z: int | None = None,
               region: tuple[slice, slice] | None = None) -> np.ndarray:
    """The full-resolution 2D ``(y, x)`` nucleus plane (or its ``region``), read now.

    Parameters
    ----------
    group : zarr.Group
        The image group.
    info : ImageInfo
        Its :func:`image_info`.
    channel : int
        Index on the ``c`` axis (:func:`resolve_channel`).
    z : int, optional
        The z plane; None: maximum projection over z.
    region : (slice, slice), optional
        ``(y, x)`` slices in full-resolution px; None: the whole plane.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` intensities in the array's dtype: t = 0, channel
        ``channel``, plane ``z`` or the maximum over z (:func:`select_plane`).
    """
    return np.asarray(select_plane(group[info.levels[0]], info, channel, z, region))


def select_plane(array, info: ImageInfo, channel: int, z: int | None = None,
                 region: tuple[slice, slice] | None = None):
    """The 2D ``(y, x)`` nucleus plane of one level array of an image: the one rule for NGFF axes.

    ``t`` (and any other non-spatial axis but ``c`` and ``z``): the first
    entry; ``c``: ``channel``; ``z``: plane ``z``, or the maximum projection.

    Parameters
    ----------
    array : zarr.Array or lazy array
        A level of the image, with the axes ``info.axes``. Only basic
        indexing and ``.max(axis=0)`` are used, so a lazy array (e.g. Dask)
        gives a lazy plane.
    info : ImageInfo
        The image's :func:`image_info`.
    channel : int
        Index on the ``c`` axis.
    z : int, optional
        The z plane; None: maximum projection over z.
    region : (slice, slice), optional
        ``(y, x)`` slices in px of this level; None: the whole plane.

    Returns
    -------
    array
        ``(h, w)`` in the array's dtype: numpy for a zarr array (read
        now), of the input's kind for a lazy one.

    Raises
    ------
    HtsError
        ``z`` out of range.
    """
    yx = dict(zip("yx", region or (slice(None), slice(None))))
    index = []
    for name, size in zip(info.axes, array.shape):
        if name == "c":
            index.append(channel)
        elif name == "z" and z is not None:
            if not 0 <= z < size:
                raise HtsError(f"z plane {z} out of range: the image has {size} planes")
            index.append(z)
        elif name in ("y", "x"):
            index.append(yx[name])
        elif name == "z":
            index.append(slice(None))
        else:  # t or any other non-spatial axis: the first entry
            index.append(0)
    plane = array[tuple(index)]
    while plane.ndim > 2:  # a remaining z axis: maximum projection
        plane = plane.max(axis=0)
    return plane


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


def level_shapes(info: ImageInfo) -> list[tuple[int, int]]:
    """The ``(y, x)`` shape (px) of each level of the image, full resolution first."""
    iy, ix = info.axes.index("y"), info.axes.index("x")
    return [(shape[iy], shape[ix]) for shape in info.shapes]


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
        Its :func:`image_info`.
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
        Its :func:`image_info`.
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
        The image's :func:`image_info`.
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
        The opened input (:func:`open_source`).
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
        The opened input (:func:`open_source`).
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
