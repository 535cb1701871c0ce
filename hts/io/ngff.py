"""OME-Zarr (NGFF 0.4 / 0.5) input: find the fields of a plate or image, each checked on its own.

Metadata is read and validated with ``ome-zarr-models`` (:mod:`hts.io.ngff_meta`);
one image's axes and nucleus plane are :mod:`hts.io.ngff_image`. Writing
(label pyramids, output plates) is :mod:`hts.io.ngff_write`.

Choices (documented in the README):

- the full-resolution level (the first ``multiscales`` dataset) is segmented;
- ``t``: each time point its own unit of work (:mod:`hts.screen.units`);
  ``z > 1``: maximum projection, one plane (``z=N``) or every plane
  (``--z all``, linked in 3D).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import zarr
from ome_zarr.format import Format

from hts.errors import HtsError
from hts.io.ngff_image import image_info
from hts.io.ngff_meta import (
    FORMATS,
    broken_node,
    ngff_version,
    ome_attrs,
    reason,
    validate,
)


@dataclass(frozen=True)
class FieldRef:
    """One image of the input: a plate field, or the whole image of a single-image Zarr."""

    path: str  # image group path inside the Zarr root ("" for a single image)
    well: str | None = None  # NGFF well path, e.g. "B/3"
    row: str | None = None
    column: str | None = None
    field: str | None = None  # field (image) path inside the well
    t: int | None = None  # time point of a time series segmented point by point (None: one 2D field)

    @property
    def key(self) -> str:
        """A name for task keys and files: ``B03-f2`` (``B03-f2-t05`` for a time point), or ``image``."""
        if self.well is None:
            base = "image"
        else:
            col = self.column.zfill(2) if self.column.isdigit() else self.column
            base = f"{self.row}{col}-f{self.field}"
        return base if self.t is None else f"{base}-t{self.t:02d}"

    @property
    def image(self) -> "FieldRef":
        """The field itself, without the time point (one label volume per field)."""
        return FieldRef(self.path, self.well, self.row, self.column, self.field)


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



def _open_group(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    p = Path(path)
    if not p.exists():
        raise HtsError(f"{p}: no such file or directory")
    if p.is_file():
        raise HtsError(f"{p}: a file, not a Zarr group (hts run reads OME-Zarr plates and images); segment "
                       f"a TIFF, PNG or NPY image with: hts segment {p} LABELS.tif [--channel NAME|INDEX]")
    try:
        return zarr.open_group(str(p), mode=mode)
    except Exception as e:  # zarr raises several types for "not a group here"
        if any(f.suffix.lower() in (".tif", ".tiff") for f in p.iterdir()):
            raise HtsError(f"{p}: a folder of TIFF files, not an OME-Zarr plate; convert it with: hts import "
                           f"{p} OUT.zarr (then hts run OUT.zarr), or segment one image with hts segment") from None
        raise HtsError(broken_node(p, e) or f"{p}: not a Zarr group ({type(e).__name__})") from None



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
        attrs = ome_attrs(root)
    except Exception as e:  # noqa: BLE001
        raise HtsError(broken_node(path, e) or f"{path}: unreadable metadata ({reason(e)})") from None
    if "plate" not in attrs and "multiscales" not in attrs:
        raise HtsError(f"{path}: a Zarr group but neither an OME-Zarr plate nor an image (no 'plate' or 'multiscales' metadata)")
    version = ngff_version(root)
    what = "plate" if "plate" in attrs else "image"
    try:
        validate(what, version, attrs)
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
        attrs = ome_attrs(root[wpath])
    except Exception as e:  # noqa: BLE001
        return None, broken_node(where, e) or f"{where}: unreadable ({reason(e)})"
    if not attrs.get("well", {}).get("images"):
        return None, f"well {wpath}: missing or empty 'well' metadata"
    try:
        validate("well", version, attrs)
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
        attrs = ome_attrs(group)
    except Exception as e:  # noqa: BLE001
        return broken_node(where, e) or f"{where}: unreadable ({reason(e)})"
    try:
        validate("image", version, attrs)
    except Exception as e:  # noqa: BLE001
        return f"{where}: invalid NGFF {version} image metadata: {reason(e)}"
    try:
        image_info(group, str(where))
    except HtsError as e:
        return str(e)
    return None

