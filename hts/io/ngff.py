"""OME-Zarr (NGFF 0.4 / 0.5) input: find the fields of a plate or image, read their nucleus plane.

Metadata is read and validated with ``ome-zarr-models``; pixel arrays go
through ``zarr`` directly. Writing (label pyramids, output plates) is
:mod:`hts.io.ngff_write`.

Choices (documented in the README):

- the full-resolution level (the first ``multiscales`` dataset) is segmented;
- ``t``: the first time point; ``z > 1``: maximum projection, or one plane
  (``z=N``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import Format, FormatV04, FormatV05
from ome_zarr.writer import get_metadata

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


def level_shapes(info: ImageInfo) -> list[tuple[int, int]]:
    """The ``(y, x)`` shape (px) of each level of the image, full resolution first."""
    iy, ix = info.axes.index("y"), info.axes.index("x")
    return [(shape[iy], shape[ix]) for shape in info.shapes]
