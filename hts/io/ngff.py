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

import json
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
    notes: list[str] = field(default_factory=list)  # oddities read around, for the run's log (e.g. a well listed twice)

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
    channel_meta: tuple[dict, ...] = ()  # the ``omero`` channel entries as written (label, color, window, ...)

    def axis_size(self, name: str) -> int:
        return self.shapes[0][self.axes.index(name)] if name in self.axes else 1


METADATA_FILES = (".zattrs", ".zgroup", ".zarray", "zarr.json")  # a node's JSON files, NGFF 0.4 (Zarr v2) and 0.5 (v3)


def _open_group(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    p = Path(path)
    if not p.exists():
        raise HtsError(f"{p}: no such file or directory")
    if p.is_file():
        raise HtsError(f"{p}: a file, not a Zarr group (hts run reads OME-Zarr plates and images; "
                       "hts segment reads TIFF, PNG and NPY files)")
    try:
        return zarr.open_group(str(p), mode=mode)
    except Exception as e:  # zarr raises several types for "not a group here"
        if any(f.suffix.lower() in (".tif", ".tiff") for f in p.iterdir()):
            raise HtsError(f"{p}: a folder of TIFF files, not an OME-Zarr plate; convert it to OME-Zarr first "
                           "(e.g. with bioio or ome-zarr-py), or segment single images with hts segment") from None
        raise HtsError(broken_node(p, e) or f"{p}: not a Zarr group ({type(e).__name__})") from None


def _ome(group: zarr.Group) -> dict:
    """The OME attributes of a group (under ``ome`` in NGFF 0.5, top level in 0.4)."""
    return get_metadata(group)


def _first_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(t.strip() for t in text[:3]) if text else type(exc).__name__


def reason(exc: Exception) -> str:
    """The first real reason of a validation or read error, in one line.

    A pydantic error gives its first failing field (``loc: message``), a
    JSON error its position; others their first line.
    """
    import pydantic

    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        text = f"{where}: {first['msg']}" if where else first["msg"]
    elif isinstance(exc, json.JSONDecodeError):
        text = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    else:
        text = f"{type(exc).__name__}: {str(exc).strip()}" if str(exc).strip() else type(exc).__name__
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())  # one line
    return text if len(text) <= 300 else text[:297] + "..."


def broken_node(directory: Path, exc: Exception | None = None) -> str | None:
    """``"<file>: <reason>"`` for the first unreadable metadata file of a Zarr node, else None.

    Parameters
    ----------
    directory : pathlib.Path
        A group's or array's directory.
    exc : Exception, optional
        The error met when opening it: its reason is used when no file is
        unreadable JSON but ``exc`` is itself a JSON error.
    """
    for name in METADATA_FILES:
        f = directory / name
        if f.is_file():
            try:
                json.loads(f.read_bytes() or b"")
            except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, EIO
                return f"{f}: {reason(e) if isinstance(e, json.JSONDecodeError) else type(e).__name__}"
    if isinstance(exc, json.JSONDecodeError):
        return f"{directory}: {reason(exc)}"
    return None


def ngff_version(group: zarr.Group) -> str:
    """``"0.5"`` for a Zarr v3 group with ``ome`` attributes, else ``"0.4"`` (the versions hts reads)."""
    return "0.5" if group.metadata.zarr_format == 3 and "ome" in group.attrs else "0.4"


def _tolerant(attrs: dict) -> dict:
    """A copy of image attributes with what real writers produce but strict validation refuses made standard.

    Older iohub releases write ``{"type": "identity"}`` coordinate
    transformations (NGFF 0.3); they are the scale 1 of every axis.
    """
    try:
        ms = attrs["multiscales"]
        ndim = len(ms[0]["axes"])
    except (KeyError, IndexError, TypeError):
        return attrs
    if not any(t.get("type") == "identity" for m in ms if isinstance(m, dict) for d in m.get("datasets", [])
               for t in d.get("coordinateTransformations", []) if isinstance(t, dict)):
        return attrs
    fixed = json.loads(json.dumps(attrs))
    for m in fixed["multiscales"]:
        for d in m.get("datasets", []):
            d["coordinateTransformations"] = [{"type": "scale", "scale": [1.0] * ndim} if t.get("type") == "identity"
                                              else t for t in d.get("coordinateTransformations", [])]
    return fixed


def _validate(kind: str, version: str, attrs: dict) -> None:
    """Validate a node's OME attributes with ome-zarr-models (``kind``: plate, well or image)."""
    from ome_zarr_models.v04.hcs import HCSAttrs as Plate04
    from ome_zarr_models.v04.image import ImageAttrs as Image04
    from ome_zarr_models.v04.well import WellAttrs as Well04
    from ome_zarr_models.v05.hcs import HCSAttrs as Plate05
    from ome_zarr_models.v05.image import ImageAttrs as Image05
    from ome_zarr_models.v05.well import WellAttrs as Well05

    models = {("plate", "0.4"): Plate04, ("well", "0.4"): Well04, ("image", "0.4"): Image04,
              ("plate", "0.5"): Plate05, ("well", "0.5"): Well05, ("image", "0.5"): Image05}
    models[kind, version].model_validate(_tolerant(attrs) if kind == "image" else attrs)


def open_source(path: str | os.PathLike) -> Source:
    """Open an OME-Zarr plate (plate -> row -> column -> field) or single multiscale image.

    Each well and field is read and validated on its own: one that is
    broken (unreadable JSON, invalid NGFF metadata, a missing or
    mismatched array) is put in ``skipped``, named with the file and the
    first reason, and the rest of the plate is processed. Label groups are
    not read (hts writes its own; :func:`hts.io.ngff_write.repair_labels`).

    Parameters
    ----------
    path : str or os.PathLike
        The Zarr root (NGFF 0.4 or 0.5).

    Returns
    -------
    Source
        Its kind, version and fields; wells and fields that cannot be
        read are in ``skipped`` with the reason.

    Raises
    ------
    HtsError
        Not a Zarr group, neither a plate nor an image, an invalid plate
        metadata or image (naming the file and the first reason), or a
        plate without any readable field.
    """
    path = Path(path)
    root = _open_group(path)
    try:
        attrs = _ome(root)
    except Exception as e:  # noqa: BLE001
        raise HtsError(broken_node(path, e) or f"{path}: unreadable metadata ({reason(e)})") from None
    if "plate" not in attrs and "multiscales" not in attrs:
        raise HtsError(f"{path}: a Zarr group but neither an OME-Zarr plate nor an image (no 'plate' or 'multiscales' metadata)")
    version = ngff_version(root)
    what = "plate" if "plate" in attrs else "image"
    try:
        _validate(what, version, attrs)
    except Exception as e:  # noqa: BLE001  # pydantic's ValidationError, or a TypeError on odd JSON
        raise HtsError(f"{path}: invalid NGFF {version} {what} metadata: {reason(e)}") from None
    if what == "plate":
        source = _plate_source(path, root, attrs["plate"], version)
        if not source.fields:
            first = source.skipped[0][1] if source.skipped else "the plate lists no wells"
            raise HtsError(f"{path}: no readable field in the plate ({len(source.skipped)} skipped; first: {first})")
        return source
    image_info(root, str(path))
    return Source(path, "image", version, [FieldRef("")])


def _plate_source(path: Path, root: zarr.Group, plate: dict, version: str) -> Source:
    """The plate's fields, each well and field checked on its own (see :func:`open_source`)."""
    rows = [r["name"] for r in plate["rows"]]
    cols = [c["name"] for c in plate["columns"]]
    fields, skipped, notes, seen = [], [], [], set()
    for well in plate["wells"]:
        wpath = well["path"]
        r, c = well["rowIndex"], well["columnIndex"]
        if not (0 <= r < len(rows) and 0 <= c < len(cols)):
            skipped.append((FieldRef(wpath, wpath, wpath.split("/")[0], wpath.split("/")[-1], "?"),
                            f"{path}: well {wpath} has rowIndex {r} / columnIndex {c} outside the plate's "
                            f"{len(rows)} rows / {len(cols)} columns"))
            continue
        row, col = rows[r], cols[c]
        ref = FieldRef(wpath, wpath, row, col, "?")
        if wpath in seen:
            notes.append(f"{path}: well {wpath} is listed twice in the plate metadata; segmented once")
            continue
        seen.add(wpath)
        images, why = _well_images(path, root, wpath, version)
        if images is None:
            skipped.append((ref, why))
            continue
        for im in dict.fromkeys(images):  # a field listed twice is segmented once
            ref = FieldRef(f"{wpath}/{im}", wpath, row, col, str(im))
            why = _field_problem(path, root, ref.path, version)
            if why is None:
                fields.append(ref)
            else:
                skipped.append((ref, why))
    return Source(path, "plate", version, fields, skipped, plate, notes)


def _well_images(path: Path, root: zarr.Group, wpath: str, version: str) -> tuple[list[str] | None, str]:
    """The image paths of a well, or None and why it cannot be read."""
    where = path / wpath
    if not where.is_dir():
        return None, f"well {wpath} is listed in the plate metadata but absent on disk ({where})"
    try:
        attrs = _ome(root[wpath])
    except Exception as e:  # noqa: BLE001
        return None, broken_node(where, e) or f"{where}: unreadable ({reason(e)})"
    if not attrs.get("well", {}).get("images"):
        return None, f"well {wpath}: missing or empty 'well' metadata"
    try:
        _validate("well", version, attrs)
    except Exception as e:  # noqa: BLE001
        return None, f"{where}: invalid NGFF {version} well metadata: {reason(e)}"
    return [str(im["path"]) for im in attrs["well"]["images"]], ""


def _field_problem(path: Path, root: zarr.Group, fpath: str, version: str) -> str | None:
    """Why the field image ``fpath`` cannot be segmented, or None when it can."""
    where = path / fpath
    if not where.is_dir():
        return f"field {fpath} is listed in its well's metadata but absent on disk ({where})"
    try:
        group = root[fpath]
        attrs = _ome(group)
    except Exception as e:  # noqa: BLE001
        return broken_node(where, e) or f"{where}: unreadable ({reason(e)})"
    try:
        _validate("image", version, attrs)
    except Exception as e:  # noqa: BLE001
        return f"{where}: invalid NGFF {version} image metadata: {reason(e)}"
    try:
        image_info(group, str(where))
    except HtsError as e:
        return str(e)
    return None


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
        axes = tuple(str(a["name"] if isinstance(a, dict) else a).lower() for a in ms["axes"])  # iohub: T,C,Z,Y,X
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
        scales.append((float(scale[iy]), float(scale[ix])) if scale else (1.0, 1.0))
    base = group[levels[0]]
    if len(base.shape) != len(axes):
        raise HtsError(f"{where}: array has {len(base.shape)} dimensions but metadata names axes {axes}")
    chunks = (int(base.chunks[iy]), int(base.chunks[ix]))
    omero = attrs.get("omero") or {}
    entries = tuple(c for c in omero.get("channels", []) if isinstance(c, dict)) if isinstance(omero, dict) else ()
    channels = tuple(str(c.get("label", "")) for c in entries)
    return ImageInfo(axes, levels, tuple(shapes), tuple(scales), chunks, channels, entries)


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
