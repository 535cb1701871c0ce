"""One NGFF image: its ``multiscales`` (axes, levels, scales, channels) and its nucleus plane.

Reading an image's metadata (:func:`image_info`), choosing its nucleus
channel (:func:`resolve_channel`) and the one rule for reducing its axes to
a 2D ``(y, x)`` plane (:func:`select_plane`). Plates and their fields are
:mod:`hts.io.ngff`; output is :mod:`hts.io.ngff_write`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from hts.errors import HtsError
from hts.io.ngff_meta import broken_node, ome_attrs, reason


@dataclass(frozen=True)
class ImageInfo:
    """The ``multiscales`` of one image group: axes, level paths, shapes and scales, channel names."""

    axes: tuple[str, ...]
    levels: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    scales: tuple[tuple[float, ...], ...]  # every level's scale on every axis (1 where none is written)
    chunks_yx: tuple[int, int]
    channels: tuple[str, ...]
    channel_meta: tuple[dict, ...] = ()  # the ``omero`` channel entries as written (label, color, window, ...)
    axis_meta: tuple[dict, ...] = ()  # the ``axes`` entries as written (names in the image's case), with type and unit

    def axis_scale(self, name: str, level: int = 0) -> float:
        """The scale (physical units per px) of axis ``name`` at ``level``; 1 for an axis the image lacks."""
        return self.scales[level][self.axes.index(name)] if name in self.axes else 1.0

    @property
    def yx_scales(self) -> tuple[tuple[float, float], ...]:
        """The ``(y, x)`` scale of each level."""
        return tuple((self.axis_scale("y", level), self.axis_scale("x", level)) for level in range(len(self.scales)))

    def axis_size(self, name: str) -> int:
        return self.shapes[0][self.axes.index(name)] if name in self.axes else 1



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
        Axis names, level paths and shapes, the scales of each level on
        every axis (physical units per px, as in the metadata; 1 when absent),
        the full-resolution ``(y, x)`` chunks and the ``omero`` channel labels.

    Raises
    ------
    HtsError
        Missing or invalid ``multiscales``, no ``y``/``x`` axis, an absent
        dataset, or an array whose dimensions do not match the axes (naming
        ``where``).
    """
    attrs = ome_attrs(group)
    try:
        ms = attrs["multiscales"][0]
        axes = tuple(str(a["name"] if isinstance(a, dict) else a).lower() for a in ms["axes"])  # iohub: T,C,Z,Y,X
        axis_meta = tuple(_axis_entry(a) for a in ms["axes"])
        levels = tuple(d["path"] for d in ms["datasets"])
    except (KeyError, IndexError, TypeError, AttributeError):
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
        except Exception as e:  # noqa: BLE001  # unreadable array metadata
            broken = broken_node(Path(where) / d["path"], e) if where else None
            raise HtsError(broken or f"{where}: dataset {d['path']!r}: {reason(e)}") from None
        if not isinstance(arr, zarr.Array):
            raise HtsError(f"{where}: dataset {d['path']!r} listed in 'multiscales' is a group, not an array")
        shapes.append(tuple(int(s) for s in arr.shape))
        scale = next((t["scale"] for t in d.get("coordinateTransformations", []) if t.get("type") == "scale"), None)
        scales.append(tuple(float(v) for v in scale) if scale and len(scale) == len(axes) else (1.0,) * len(axes))
    base = group[levels[0]]
    if len(base.shape) != len(axes):
        raise HtsError(f"{where}: array has {len(base.shape)} dimensions but metadata names axes {axes}")
    chunks = (int(base.chunks[iy]), int(base.chunks[ix]))
    omero = attrs.get("omero") or {}
    entries = tuple(c for c in omero.get("channels", []) if isinstance(c, dict)) if isinstance(omero, dict) else ()
    channels = tuple(str(c.get("label", "")) for c in entries)
    return ImageInfo(axes, levels, tuple(shapes), tuple(scales), chunks, channels, entries, axis_meta)


AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def _axis_entry(axis) -> dict:
    """An ``axes`` entry as NGFF 0.4/0.5 write it, the name as the image spells it (iohub: ``T, C, Z, Y, X``).

    A bare name (NGFF 0.3) gets its ``type`` for the known names; outputs
    copy these entries, so labels use the image's own axis names and units.
    """
    entry = dict(axis) if isinstance(axis, dict) else {"name": str(axis)}
    entry["name"] = str(entry["name"])
    if entry["name"].lower() in AXIS_TYPES:
        entry.setdefault("type", AXIS_TYPES[entry["name"].lower()])
    return entry


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
               region: tuple[slice, slice] | None = None, t: int = 0) -> np.ndarray:
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
    t : int
        The time point.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` intensities in the array's dtype: time point ``t``, channel
        ``channel``, plane ``z`` or the maximum over z (:func:`select_plane`).
    """
    return np.asarray(select_plane(group[info.levels[0]], info, channel, z, region, t))


def read_stack(group: zarr.Group, info: ImageInfo, channel: int, t: int = 0) -> np.ndarray:
    """Every z-plane of one channel and time point at full resolution: ``(Z, H, W)`` (Z = 1 without a z axis).

    Parameters
    ----------
    group : zarr.Group
        The image group.
    info : ImageInfo
        Its :func:`image_info`.
    channel : int
        Index on the ``c`` axis.
    t : int
        The time point.

    Returns
    -------
    numpy.ndarray
        ``(Z, H, W)`` in the array's dtype.
    """
    if "z" not in info.axes:
        return read_plane(group, info, channel, None, None, t)[None]
    return np.stack([read_plane(group, info, channel, z, None, t) for z in range(info.axis_size("z"))])


def select_plane(array, info: ImageInfo, channel: int, z: int | None = None,
                 region: tuple[slice, slice] | None = None, t: int = 0):
    """The 2D ``(y, x)`` nucleus plane of one level array of an image: the one rule for NGFF axes.

    ``t``: time point ``t``; any other non-spatial axis but ``c`` and ``z``:
    the first entry; ``c``: ``channel``; ``z``: plane ``z``, or the maximum projection.

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
    t : int
        The time point (on a ``t`` axis).

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
        elif name == "t":
            if not 0 <= t < size:
                raise HtsError(f"time point {t} out of range: the image has {size}")
            index.append(t)
        else:  # any other non-spatial axis: the first entry
            index.append(0)
    plane = array[tuple(index)]
    while plane.ndim > 2:  # a remaining z axis: maximum projection
        plane = plane.max(axis=0)
    return plane


def level_shapes(info: ImageInfo) -> list[tuple[int, int]]:
    """The ``(y, x)`` shape (px) of each level of the image, full resolution first."""
    iy, ix = info.axes.index("y"), info.axes.index("x")
    return [(shape[iy], shape[ix]) for shape in info.shapes]
