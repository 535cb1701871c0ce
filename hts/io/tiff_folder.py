"""A folder of per-field, per-channel TIFFs as a plate: which files make which field, channel, z and t.

Two ways in (:func:`open_folder`):

- an ImageXpress acquisition with a ``.jdce`` descriptor, ``timepoint<N>``
  folders and an ``image_metadata_*.csv`` manifest (MetaXpress Acquire,
  ImageXpress HCS.ai) is read with ``bioio-imagexpress``, channel names and
  pixel size from its descriptor;
- any other folder (a classic MetaXpress export ``<plate>_<well>_s<site>_w<channel>.tif``,
  which ``bioio-imagexpress`` 0.3 does not read, or another instrument's
  export) is matched file by file with a ``--pattern``: a Python regular
  expression with named groups (:data:`GROUPS`), matched with
  :func:`re.fullmatch` against each file's path relative to the folder
  (``/``-separated). Files that do not match (thumbnails, ``.HTD``, notes)
  are ignored. Channel names come from the MetaXpress ``.HTD`` file
  (``WaveName<N>``), else from the files' MetaSeries tags
  (``_IllumSetting_``), else ``w<N>``; the pixel size from the MetaSeries
  ``spatial-calibration-x``. Planes are read with ``tifffile``.

Nothing here writes; :mod:`hts.io.imports` writes the OME-Zarr plate, one
field (:class:`FieldSource`) in memory at a time.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from hts.errors import HtsError

GUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
PRESETS = {
    # MetaXpress export: [TimePoint_<t>/][ZStep_<z>/]<plate>_<well>[_s<site>][_w<channel>][<GUID>].tif;
    # `_thumb` files do not match
    "imagexpress": (r"(?i)(?:[^/]+/)*?(?:TimePoint_(?P<t>\d+)/)?(?:ZStep_(?P<z>\d+)/)?"
                    r"(?P<plate>[^/]+?)_(?P<well>[A-Z]{1,2}\d{1,3})(?:_s(?P<site>\d+))?(?:_w(?P<channel>\d+))?"
                    rf"(?:{GUID})?\.tiff?"),
    # Opera / Operetta (Harmony) export: r<row>c<column>f<field>p<plane>-ch<channel>sk<t>fk1fl1.tiff
    "operetta": (r"(?i)(?:[^/]+/)*?r(?P<row>\d+)c(?P<column>\d+)f(?P<site>\d+)p(?P<z>\d+)-ch(?P<channel>\d+)"
                 r"sk(?P<t>\d+)fk\d+fl\d+\.tiff?"),
}
DEFAULT_PATTERN = "imagexpress"
GROUPS = ("plate", "well", "row", "column", "site", "channel", "t", "z")  # the named groups a pattern may have
Plane = tuple[str, str, str]  # (t, channel, z) values as matched ("" where the pattern has no such group)


@dataclass(frozen=True)
class FieldSource:
    """One field of the plate: where it is and how to read it.

    ``read()`` returns the field as a ``(T, C, Z, Y, X)`` array (the
    source's dtype), every field of a plate with the same ``T, C, Z``.
    """

    row: str  # plate row letters, "B"
    column: str  # column number without zeros, "3"
    label: str  # for messages: the field's first file (relative to the folder) or scene
    read: Callable[[], np.ndarray]

    @property
    def well(self) -> str:
        """The NGFF well path, ``"B/3"``."""
        return f"{self.row}/{self.column}"


@dataclass
class PlateSource:
    """A folder read as a plate: its fields in plate order (row, column, site) and their metadata."""

    folder: Path
    name: str  # the plate's name (the files' plate group, or the folder's name)
    fields: list[FieldSource]
    channels: list[str]  # one name per channel, in order
    pixel_size: float | None = None  # um per px (y and x), when the instrument says
    layout: tuple[int, int] | None = None  # (rows, columns) of the plate format, when the instrument says
    ignored: list[str] = field(default_factory=list)  # files (relative paths) that matched no pattern
    reader: str = "pattern"  # "pattern" or "bioio-imagexpress"


def compile_pattern(text: str | None) -> re.Pattern:
    """The ``--pattern``: a preset name (:data:`PRESETS`) or a regular expression with named groups.

    Parameters
    ----------
    text : str or None
        ``"imagexpress"`` (None: the default), ``"operetta"``, or a regular
        expression with a ``well`` group (``B03``, ``b3``) or ``row`` and
        ``column`` groups (``2`` or ``B``; ``3``), and optionally ``site``,
        ``channel``, ``plate``, ``t`` and ``z``.

    Returns
    -------
    re.Pattern

    Raises
    ------
    HtsError
        Not a regular expression, no ``well`` (nor ``row`` and ``column``)
        group, or a group name not in :data:`GROUPS`.
    """
    text = PRESETS.get((text or DEFAULT_PATTERN).lower(), text or DEFAULT_PATTERN)
    try:
        pattern = re.compile(text)
    except re.error as e:
        raise HtsError(f"--pattern {text!r}: not a regular expression ({e})") from None
    names = set(pattern.groupindex)
    if unknown := sorted(names - set(GROUPS)):
        raise HtsError(f"--pattern: unknown group {unknown[0]!r} (named groups: {', '.join(GROUPS)})")
    if "well" not in names and not {"row", "column"} <= names:
        raise HtsError("--pattern: needs a (?P<well>...) group, or (?P<row>...) and (?P<column>...)")
    return pattern


def row_name(value: str) -> str:
    """A plate row as letters: ``"b"`` -> ``"B"``, ``"2"`` -> ``"B"``, ``"27"`` -> ``"AA"``."""
    if value.isdigit():
        n, name = int(value), ""
        while n > 0:
            n, r = divmod(n - 1, 26)
            name = chr(ord("A") + r) + name
        return name
    return value.upper()


def well_position(match: re.Match) -> tuple[str, str] | None:
    """``(row letters, column number)`` of a file's match: ``B03`` -> ``("B", "3")``; None if not a well."""
    groups = match.groupdict()
    if groups.get("well") is not None:
        m = re.fullmatch(r"([A-Za-z]{1,2})0*(\d+)", groups["well"])
        row, column = (m.group(1), m.group(2)) if m else (None, None)
    else:
        row, column = groups.get("row"), groups.get("column")
    if not (row and column and column.isdigit() and int(column) > 0
            and (row.isalpha() and len(row) <= 2 or row.isdigit() and 0 < int(row) <= 702)):  # A..ZZ
        return None
    return row_name(row), str(int(column))


def _order(value: str) -> tuple:
    """Sort key: numbers by value, then names."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _walk(folder: Path) -> Iterator[str]:
    """Every file under ``folder`` as a ``/``-separated relative path, sorted; hidden and ``.zarr`` folders skipped."""
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.lower().endswith(".zarr"))
        rel = Path(top).relative_to(folder).as_posix()
        for name in sorted(files):
            if not name.startswith("."):
                yield name if rel == "." else f"{rel}/{name}"


def match_files(folder: Path, pattern: re.Pattern, shown: str | None = None
                ) -> tuple[dict[str, dict[tuple, dict[Plane, str]]], list[str]]:
    """The files of ``folder`` that ``pattern`` matches, by plate, field and plane.

    ``shown`` names the pattern in messages (a preset's name; default: the expression).

    Returns
    -------
    planes : dict
        ``planes[plate][(row, column, site)][(t, channel, z)]`` = the file's
        relative path.
    ignored : list of str
        The files that did not match.

    Raises
    ------
    HtsError
        The folder holds no file, no file matches, a matched well is not a
        well, or two files claim the same plane.
    """
    planes: dict[str, dict[tuple, dict[Plane, str]]] = {}
    ignored: list[str] = []
    for rel in _walk(folder):
        m = pattern.fullmatch(rel)
        if m is None:
            ignored.append(rel)
            continue
        position = well_position(m)
        if position is None:
            raise HtsError(f"{folder / rel}: the --pattern match gives no well (row A-ZZ, column from 1): "
                           f"{ {k: v for k, v in m.groupdict().items() if v is not None} }")
        g = {k: v or "" for k, v in m.groupdict().items()}
        fields = planes.setdefault(g.get("plate", ""), {})
        plane = (g.get("t", ""), g.get("channel", ""), g.get("z", ""))
        files = fields.setdefault((*position, g.get("site", "")), {})
        if plane in files:
            raise HtsError(f"{folder / rel}: the same field and plane as {files[plane]} (well {''.join(position)}, "
                           f"site {g.get('site') or '-'}, channel {plane[1] or '-'}, t {plane[0] or '-'}, "
                           f"z {plane[2] or '-'}); remove one or narrow --pattern")
        files[plane] = rel
    if not planes:
        if not ignored:
            raise HtsError(f"{folder}: empty folder (no files)")
        raise HtsError(f"{folder}: no file matches --pattern {shown or pattern.pattern!r} ({len(ignored)} files, e.g. "
                       f"{ignored[0]}); see docs/import.md")
    return planes, ignored


def read_htd(folder: Path, plate: str) -> dict[str, list[str]]:
    """The MetaXpress ``.HTD`` file of ``plate`` in ``folder`` (``"Key", value, ...`` lines), or ``{}``.

    The file named after the plate is taken, else the folder's only ``.HTD``.
    """
    htds = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".htd" and p.is_file())
    named = [p for p in htds if p.stem == plate]
    path = named[0] if named else htds[0] if len(htds) == 1 else None
    if path is None:
        return {}
    rows = csv.reader(io.StringIO(path.read_text(encoding="latin-1")), skipinitialspace=True)
    return {row[0].strip(): [v.strip() for v in row[1:]] for row in rows if row}


def metaseries(path: Path) -> dict:
    """The ``PlaneInfo`` MetaSeries tags of a TIFF (``_IllumSetting_``, ``spatial-calibration-x``, ...), or ``{}``."""
    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.metaseries_metadata
    except Exception:  # noqa: BLE001  # unreadable tags: no metadata (the pixels are read, and judged, later)
        return {}
    return (meta or {}).get("PlaneInfo", {}) or {}


def pixel_size_um(tags: dict) -> float | None:
    """The MetaSeries pixel size in um (``spatial-calibration-x`` in ``um``), else None."""
    size, unit = tags.get("spatial-calibration-x"), str(tags.get("spatial-calibration-units", "")).lower()
    if isinstance(size, (int, float)) and size > 0 and unit in ("um", "µm", "micron", "microns", "micrometer"):
        return float(size)
    return None


def channel_names(values: list[str], htd: dict[str, list[str]], tags: list[dict]) -> list[str]:
    """Names of the channels ``values`` (as matched): ``.HTD`` ``WaveName<N>``, MetaSeries ``_IllumSetting_``, or ``w<N>``.

    A source whose names are missing or not unique is passed over; a
    non-numeric channel value (``DAPI`` in ``..._DAPI.tif``) is its own name.
    """
    fallback = [v if v and not v.isdigit() else f"w{v or 1}" for v in values]
    for names in ([(htd.get(f"WaveName{v}") or [""])[0] for v in values],
                  [str(t.get("_IllumSetting_", "")).strip() for t in tags]):
        if all(names) and len(set(names)) == len(names) and all(v.isdigit() or not v for v in values):
            return names
    return fallback


def _plane_reader(folder: Path, files: list[str], shape: tuple[int, int, int], first: dict) -> Callable[[], np.ndarray]:
    """Read the ``T * C * Z`` files of one field (t, channel, z order) into a ``(T, C, Z, Y, X)`` array.

    ``first`` is shared by the plate's fields: the first plane read sets its
    ``file``, ``shape`` and ``dtype``, which every other plane must have.
    """

    def read() -> np.ndarray:
        out = None
        for i, rel in enumerate(files):
            try:
                plane = tifffile.imread(folder / rel)
            except Exception as e:  # noqa: BLE001  # a truncated or non-TIFF file: one line naming it
                raise HtsError(f"{folder / rel}: not a readable TIFF ({type(e).__name__}: {e})") from None
            plane = plane.reshape([n for n in plane.shape if n != 1] or [1]) if plane.ndim != 2 else plane
            if plane.ndim != 2:
                raise HtsError(f"{folder / rel}: not one 2D plane (shape {plane.shape}); import expects one file "
                               "per field, channel, z and t")
            if not first:
                first.update(file=rel, shape=plane.shape, dtype=plane.dtype)
            if plane.shape != first["shape"] or plane.dtype != first["dtype"]:
                raise HtsError(f"{folder / rel}: {plane.shape[0]}x{plane.shape[1]} {plane.dtype}, but the plate's "
                               f"first plane {folder / first['file']} is {first['shape'][0]}x{first['shape'][1]} "
                               f"{first['dtype']}; every plane of a plate must have one shape and dtype")
            if out is None:
                out = np.empty((len(files), *plane.shape), plane.dtype)
            out[i] = plane
        return out.reshape(*shape, *out.shape[1:])

    return read


def index_folder(folder: Path, pattern: str | None = None, plate: str | None = None) -> PlateSource:
    """The plate in a folder of per-plane TIFFs, by ``pattern`` (:func:`compile_pattern`); no pixel is read.

    Parameters
    ----------
    folder : pathlib.Path
        The instrument's export folder (searched recursively).
    pattern : str, optional
        Preset name or regular expression (default: ``imagexpress``).
    plate : str, optional
        The plate to take when the files name several (their ``plate`` group).

    Returns
    -------
    PlateSource
        Fields in plate order, channels sorted by their value (``w1, w2``).

    Raises
    ------
    HtsError
        As :func:`match_files`; several plates and no ``plate``; an unknown
        ``plate``; a field without a file for a channel, z plane or time
        point that another field has.
    """
    planes, ignored = match_files(folder, compile_pattern(pattern), pattern or DEFAULT_PATTERN)
    if plate is None and len(planes) > 1:
        names = sorted(planes)
        raise HtsError(f"{folder}: files of {len(names)} plates ({', '.join(names[:4])}"
                       f"{', ...' if len(names) > 4 else ''}); choose one with --plate")
    if plate is not None and plate not in planes:
        raise HtsError(f"--plate {plate}: no such plate in {folder} (found {', '.join(sorted(planes)) or 'none'})")
    name = plate if plate is not None else next(iter(planes))
    by_field = planes[name]
    ts, cs, zs = (sorted({p[i] for files in by_field.values() for p in files}, key=_order) for i in range(3))
    wanted = [(t, c, z) for t in ts for c in cs for z in zs]
    first_plane: dict = {}  # the plate's first plane, shared by the fields' readers
    keys = sorted(by_field, key=lambda k: (len(k[0]), k[0], int(k[1]), _order(k[2])))  # plate order
    fields = []
    for row, column, site in keys:
        files = by_field[(row, column, site)]
        first = files[min(files, key=lambda p: tuple(map(_order, p)))]
        for t, c, z in wanted:
            if (t, c, z) not in files:
                what = ", ".join(f"{k} {v}" for k, v in (("channel", c), ("t", t), ("z", z)) if v)
                raise HtsError(f"{folder / first}: its field (well {row}{column}, site {site or '-'}) has no file "
                               f"for {what or 'a plane'}; every field needs the same channels, z planes and times")
        fields.append(FieldSource(row, column, first, _plane_reader(folder, [files[p] for p in wanted],
                                                                      (len(ts), len(cs), len(zs)), first_plane)))
    tags = [metaseries(folder / by_field[keys[0]][(ts[0], c, zs[0])]) for c in cs]
    htd = read_htd(folder, name)
    layout = None
    if (htd.get("YWells") or [""])[0].isdigit() and (htd.get("XWells") or [""])[0].isdigit():
        layout = (int(htd["YWells"][0]), int(htd["XWells"][0]))
    return PlateSource(folder, name or folder.name, fields, channel_names(cs, htd, tags),
                       pixel_size_um(tags[0]), layout, ignored)


def open_acquisition(folder: Path) -> PlateSource | None:
    """An ImageXpress acquisition (``.jdce`` descriptor) read with ``bioio-imagexpress``; None if ``folder`` is not one.

    Each scene (a well's site) is one field; channel names and pixel size
    come from the descriptor.
    """
    from bioio_base.exceptions import UnsupportedFileFormatError
    from bioio_imagexpress import Reader

    try:
        reader = Reader(folder)
    except UnsupportedFileFormatError:
        return None
    except Exception as e:  # noqa: BLE001  # a broken descriptor or manifest: one line naming the folder
        raise HtsError(f"{folder}: an ImageXpress acquisition that bioio-imagexpress cannot read ({e})") from None

    def reader_of(index: int, scene: str) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            reader.set_scene(index)
            try:
                return np.asarray(reader.get_image_data("TCZYX"))
            except (OSError, IndexError, ValueError) as e:
                raise HtsError(f"{folder}: scene {scene}: {e}") from None

        return read

    fields = []
    for index, scene in enumerate(reader.scenes):
        reader.set_scene(index)
        fields.append(FieldSource(row_name(str(reader.row)), str(int(reader.column)), scene, reader_of(index, scene)))
    reader.set_scene(0)
    names = [str(c) for c in reader.channel_names]
    size = reader.physical_pixel_sizes.X
    return PlateSource(folder, folder.name, fields, names, float(size) if size else None, reader="bioio-imagexpress")


def open_folder(folder: str | os.PathLike, pattern: str | None = None, plate: str | None = None) -> PlateSource:
    """The plate in ``folder``: an ImageXpress acquisition (bioio-imagexpress), else files matched by ``pattern``.

    Parameters
    ----------
    folder : str or os.PathLike
        The instrument's export folder.
    pattern : str, optional
        Preset or regular expression (:func:`compile_pattern`); given, the
        folder is always matched by it.
    plate : str, optional
        As in :func:`index_folder`.

    Returns
    -------
    PlateSource

    Raises
    ------
    HtsError
        ``folder`` is not a folder, or as :func:`index_folder`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HtsError(f"{folder}: not a folder" if folder.exists() else f"{folder}: no such folder")
    if pattern is None:
        acquisition = open_acquisition(folder)
        if acquisition is not None:
            return acquisition
    return index_folder(folder, pattern, plate)
