"""Platemaps: a scientist's CSV of per-well annotations, joined onto hts's tables as ``Metadata_*`` columns.

A platemap has a ``well`` column and any others (``treatment``, ``dose``,
``role``, ``compound``, ...). Wells are written as CellProfiler/pycytominer
ids (``A01``) in every output of this module, whatever spelling the file or
the table uses (``A1``, ``a/1``, ``A-01``; hts's own tables hold ``B/3``
paths). Each platemap column ``x`` becomes ``Metadata_x`` (a column already
named ``Metadata_...`` keeps its name), as pycytominer's ``annotate`` does,
so the joined tables feed its ``aggregate``/``normalize`` directly, e.g.
``samples="Metadata_role == 'negative'"``.

Errors in a platemap are :class:`~hts.errors.HtsError` with a one-line
message naming the file and, where it applies, the line (as in the file,
header = line 1), the column and the value.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from hts.errors import HtsError

ROLES = ("negative", "positive", "sample")
#: Metadata names hts and CellProfiler use themselves (compared case-insensitively, after prefixing).
RESERVED = ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber")
_WELL = re.compile(r"([A-Za-z]{1,2})[/_-]?([0-9]{1,3})")
_SUFFIX_SEP = {".tsv": "\t", ".tab": "\t"}


def well_id(row: str, column: str | int) -> str:
    """The CellProfiler/pycytominer name of a well: ``("B", "3") -> "B03"``, ``("af", 48) -> "AF48"``.

    Metadata joins are exact string matches, so every well spelling is mapped
    to this one form: upper-case row letters (two past Z on 1536-well plates)
    and the column zero-padded to two digits.

    Parameters
    ----------
    row : str
        One or two letters, any case.
    column : str or int
        The column number, from 1 (``"03"`` and ``3`` are the same).

    Returns
    -------
    str
        The well id, e.g. ``"B03"``.

    Raises
    ------
    ValueError
        When ``row`` is not one or two letters or ``column`` not an integer >= 1.
    """
    r, c = str(row).strip(), str(column).strip()
    if not re.fullmatch(r"[A-Za-z]{1,2}", r):
        raise ValueError(f"bad well row {row!r}: expected one or two letters (A..Z, AA..AF)")
    if not re.fullmatch(r"[0-9]+", c) or int(c) < 1:
        raise ValueError(f"bad well column {column!r}: expected an integer >= 1")
    return f"{r.upper()}{int(c):02d}"


def parse_well(text: str) -> tuple[str, int]:
    """Split a well name into (row, column): ``A01``, ``A1``, ``a1``, ``A/1``, ``A-01``, ``A_1`` all give ``("A", 1)``.

    Platemaps are typed by hand and hts's tables write ``B/3``, so row
    letters in any case, an optional ``/``, ``-`` or ``_`` and the column
    number are accepted, with surrounding spaces.

    Parameters
    ----------
    text : str
        The well name.

    Returns
    -------
    tuple of (str, int)
        The upper-case row letters and the column number (>= 1).

    Raises
    ------
    ValueError
        When ``text`` is no well name; the message quotes it.
    """
    m = _WELL.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or int(m.group(2)) < 1:
        raise ValueError(f"bad well name {text!r} (expected e.g. A01, A1, A/1 or B-03)")
    return m.group(1).upper(), int(m.group(2))


def _normalise(text: str) -> str:
    return well_id(*parse_well(text))


def _prefixed(column: str) -> str:
    return column if column.startswith("Metadata_") else f"Metadata_{column}"


def _separator(path: Path, header: str) -> str:
    if path.suffix.lower() in _SUFFIX_SEP:
        return _SUFFIX_SEP[path.suffix.lower()]
    return max((",", "\t", ";"), key=header.count)  # ties (a one-column header) go to ","


def read_platemap(path: str | Path) -> pd.DataFrame:
    """Read and check a platemap CSV (or tab-separated file), with wells as ``A01`` ids.

    Parsed with :mod:`csv`, not :func:`pandas.read_csv`, so that every error names the line as an
    editor shows it (blank lines and quoted multi-line values counted). The separator is tab for
    ``.tsv``/``.tab``, else the most frequent of ``,``, tab and ``;`` in the header. Names and values
    are stripped of surrounding spaces; the ``well``, ``role`` and ``dose`` headers are matched in any
    case and written in lower case. Rows with every field empty are skipped, as are unnamed columns
    with no values (a spreadsheet's trailing separators).

    Parameters
    ----------
    path : str or pathlib.Path
        The platemap file (UTF-8, an Excel byte-order mark allowed).

    Returns
    -------
    pandas.DataFrame
        One row per well in file order: ``well`` (``A01`` form), then the other columns in file order
        as text (``""`` when empty), except ``dose`` (float, NaN when empty) and ``role`` (one of
        :data:`ROLES`; empty means ``"sample"``). ``attrs["path"]``: the file, for messages.

    Raises
    ------
    HtsError
        When the file is missing, unreadable or empty; has no ``well`` column; has a column without a
        name, a duplicated column or one whose ``Metadata_`` name clashes with hts's own metadata
        (:data:`RESERVED`); has a line with more values than the header, a bad or duplicated well, an
        unknown role or a dose that is not a finite number >= 0.
    """
    path = Path(path)
    name = f"platemap {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HtsError(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HtsError(f"{name}: cannot read it ({type(e).__name__}: {e})".replace("\n", " ")) from None
    records, end = [], 0
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_separator(path, first_line))
        for fields in reader:
            records.append((end + 1, [f.strip() for f in fields]))
            end = reader.line_num
    except csv.Error as e:
        raise HtsError(f"{name}, line {end + 1}: cannot parse it ({e})") from None
    records = [(n, f) for n, f in records if any(f)]
    if not records:
        raise HtsError(f"{name} is empty (expected a header line with a 'well' column, then one line a well)")
    (_, header), rows = records[0], records[1:]
    width = len(header)
    keep = [i for i, h in enumerate(header) if h or any(i < len(f) and f[i] for _, f in rows)]
    for i in keep:
        if not header[i]:
            raise HtsError(f"{name}, line 1: column {i + 1} has values but no name")
    named = [header[i] for i in keep]
    header = [h.lower() if h.lower() in ("well", "role", "dose") else h for h in named]
    if "well" not in header:
        raise HtsError(f"{name}: no 'well' column (its columns: {', '.join(map(repr, named))})")
    if not rows:
        raise HtsError(f"{name} has a header but no wells")
    well_at = header.index("well")
    reserved = {r.lower() for r in RESERVED}
    seen: dict[str, str] = {}
    for i, (h, original) in enumerate(zip(header, named)):
        key = _prefixed(h).lower()
        if key in reserved and i != well_at:
            raise HtsError(f"{name}, line 1: column {original!r} becomes {_prefixed(original)!r}, which clashes "
                           f"with hts's own metadata ({', '.join(RESERVED)}; the well column is "
                           f"{named[well_at]!r}); rename it")
        if key in seen:
            raise HtsError(f"{name}, line 1: columns {seen[key]!r} and {original!r} both become {_prefixed(h)!r}")
        seen[key] = original
    table: dict[str, list] = {h: [] for h in header}
    first: dict[str, int] = {}
    for line, fields in rows:
        if any(fields[width:]):
            raise HtsError(f"{name}, line {line}: {len(fields)} values for the header's {width} columns")
        values = dict(zip(header, (fields[i] if i < len(fields) else "" for i in keep)))
        try:
            well = _normalise(values["well"])
        except ValueError:
            raise HtsError(f"{name}, line {line}, column well: bad well name {values['well']!r} "
                           "(expected e.g. A01, A1, A/1 or B-03)") from None
        if well in first:
            raise HtsError(f"{name}: well {well} is on line {first[well]} and again on line {line}")
        first[well] = line
        values["well"] = well
        if "role" in values:
            role = values["role"].lower() or "sample"
            if role not in ROLES:
                raise HtsError(f"{name}, line {line}, column role: unknown role {values['role']!r} "
                               f"(allowed: {', '.join(ROLES)}; empty means sample)")
            values["role"] = role
        if "dose" in values:
            values["dose"] = _dose(values["dose"], f"{name}, line {line}, column dose")
        for h in header:
            table[h].append(values[h])
    out = pd.DataFrame(table, columns=["well", *(h for h in header if h != "well")])
    if "dose" in out:
        out["dose"] = out["dose"].astype(np.float64)
    out.attrs["path"] = str(path)
    return out


def _dose(text: str, where: str) -> float:
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise HtsError(f"{where}: dose {text!r} is not a number >= 0 (write the unit in the header, not the cell)")
    return value


def metadata_columns(platemap: pd.DataFrame) -> pd.DataFrame:
    """The platemap as ``Metadata_*`` columns indexed by well id, the form that is joined onto tables.

    Parameters
    ----------
    platemap : pandas.DataFrame
        From :func:`read_platemap`, or any frame with unique wells in a ``well`` column.

    Returns
    -------
    pandas.DataFrame
        Index: the ``A01`` well ids (named ``Metadata_Well``); columns: ``Metadata_<column>`` for every
        column but ``well``, in order (a ``Metadata_...`` column keeps its name). ``attrs`` are kept.

    Raises
    ------
    ValueError
        When a well name is bad or a well is listed twice.
    """
    ids = pd.Index([_normalise(w) for w in platemap["well"]], name="Metadata_Well")
    if ids.has_duplicates:
        raise ValueError(f"platemap lists well(s) more than once: {', '.join(ids[ids.duplicated()].unique())}")
    out = platemap.drop(columns="well").set_axis(ids, axis=0)
    out.columns = [_prefixed(str(c)) for c in out.columns]
    out.attrs = dict(platemap.attrs)
    return out


def join_platemap(table: pd.DataFrame, platemap: pd.DataFrame | None, well_column: str = "well") -> pd.DataFrame:
    """Left-join a platemap's ``Metadata_*`` columns onto a per-field/per-well/per-nucleus table.

    ``table[well_column]`` may hold hts's ``B/3`` paths or CellProfiler's
    ``B03`` ids; both are matched through :func:`well_id` without changing
    the table's own column. Rows of wells missing from the platemap (and
    rows with an empty well, e.g. fields of an acquisition without wells)
    get NaN in every ``Metadata_*`` column, so "not in the platemap" (NaN)
    stays distinct from "in the platemap, left empty" (``""``).

    Parameters
    ----------
    table : pandas.DataFrame
        Any table with a well column.
    platemap : pandas.DataFrame or None
        From :func:`read_platemap`; None returns ``table`` itself.
    well_column : str
        The table's well column (``"well"`` for hts's tables, ``"Metadata_Well"`` for CellProfiler's).

    Returns
    -------
    pandas.DataFrame
        A new frame: ``table``'s columns, rows and index unchanged, then the ``Metadata_*`` columns.

    Raises
    ------
    HtsError
        When the table has no ``well_column``, a non-empty well there is no well name, or the table
        already has one of the platemap's columns.
    """
    if platemap is None:
        return table
    if well_column not in table.columns:
        raise HtsError(f"table has no well column {well_column!r} (its columns: {', '.join(map(str, table.columns))})")
    meta = metadata_columns(platemap)
    if clash := [c for c in meta.columns if c in table.columns]:
        raise HtsError(f"table already has platemap column(s) {', '.join(clash)} (joined twice?)")
    try:
        keys = [_normalise(w) if isinstance(w, str) and w.strip() else None for w in table[well_column]]
    except ValueError as e:
        raise HtsError(f"table column {well_column!r}: {e}") from None
    added = meta.reindex(pd.Index(keys, dtype=object))
    return table.assign(**{c: added[c].to_numpy() for c in added.columns})  # by position: any index works


def _plate_order(well: str) -> tuple[int, str, int]:
    row, column = parse_well(well)
    return len(row), row, column


def _listing(wells: set[str], limit: int = 10) -> str:
    names = sorted(wells, key=_plate_order)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def coverage_warnings(platemap: pd.DataFrame, plate_wells: Iterable[str]) -> list[str]:
    """Warnings for a platemap that does not match the plate: often the wrong file or a shifted layout.

    Parameters
    ----------
    platemap : pandas.DataFrame
        From :func:`read_platemap` (``attrs["path"]``, when present, names the file in the messages).
    plate_wells : iterable of str
        The plate's wells, any spelling (``B/3``, ``B03``); empty ones skipped, repeats allowed.

    Returns
    -------
    list of str
        Up to two one-line messages listing wells in plate order, at most 10 then "and N more": the
        platemap's wells missing from the plate, then the plate's wells missing from the platemap.
        Empty when they match.
    """
    name = f"platemap {platemap.attrs['path']}" if platemap.attrs.get("path") else "platemap"
    mapped = set(metadata_columns(platemap).index)
    plate = {_normalise(w) for w in plate_wells if isinstance(w, str) and w.strip()}
    out = []
    if absent := mapped - plate:
        out.append(f"{name}: {len(absent)} of its {len(mapped)} wells are not on the plate: {_listing(absent)}")
    if unmapped := plate - mapped:
        out.append(f"{name}: {len(unmapped)} of the plate's {len(plate)} wells are not in it "
                   f"(their Metadata_ columns are NaN): {_listing(unmapped)}")
    return out


def controls(platemap: pd.DataFrame) -> dict[str, list[str]]:
    """The well ids of each role, e.g. the negative and positive controls for Z' and percent of control.

    Parameters
    ----------
    platemap : pandas.DataFrame
        From :func:`read_platemap`, or a frame with ``well`` and ``role``.

    Returns
    -------
    dict of str to list of str
        Every role of :data:`ROLES` (then any other role the frame holds) to its ``A01`` well ids in
        platemap order; empty lists without a ``role`` column. An empty or missing role is ``"sample"``.
    """
    out: dict[str, list[str]] = {role: [] for role in ROLES}
    if "role" not in platemap.columns:
        return out
    for well, role in zip(platemap["well"], platemap["role"]):
        role = role.strip().lower() if isinstance(role, str) and role.strip() else "sample"
        out.setdefault(role, []).append(_normalise(well))
    return out
