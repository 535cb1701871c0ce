"""``hts import``: a folder of per-field TIFFs becomes an OME-Zarr HCS plate (NGFF 0.5, or 0.4).

The folder is read by :mod:`hts.io.tiff_folder` (bioio-imagexpress for
``.jdce`` acquisitions, else a file-name pattern). The plate is written with
``ome-zarr-py`` (``write_plate_metadata``, ``write_well_metadata``,
``write_image``), as the outputs of ``hts run`` are:

- wells ``<row>/<column>`` (``B/3``), fields ``0, 1, ...`` in site order;
  the plate's rows and columns are those of its format (the ``.HTD`` file's,
  else the smallest standard plate, 6 to 1536 wells, that holds the wells);
- each field an image with axes ``c, y, x`` (``t`` and ``z`` added when
  there is more than one), the source dtype, one chunk per plane (at most
  :data:`CHUNK` px a side), a 2x pyramid down to about 256 px, the pixel
  size in micrometres when known, and ``omero`` channels (label, colour,
  window) so ``hts run --channel NAME`` finds the nucleus channel;
- streaming: one field is in memory at a time, a progress bar over fields;
- the plate is built under a hidden name beside ``OUT``
  (:func:`hts.io.staging.staged_group`) and appears at ``OUT`` only when
  complete; an error or Ctrl-C leaves ``OUT`` as it was.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata
from tqdm import tqdm

from hts.errors import HtsError
from hts.io.ngff_meta import FORMATS
from hts.io.staging import staged_group
from hts.io.tiff_folder import FieldSource, PlateSource, open_folder, row_name

CHUNK = 2048  # px: the largest chunk side (a plane per chunk up to this)
SMALLEST_LEVEL = 256  # px: pyramid levels halve the field while its short side stays at least this
MAX_LEVELS = 5
STANDARD_PLATES = ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48))  # rows x columns, 6 to 1536 wells
COLORS = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_plate` wrote."""

    out: Path
    plate: str
    reader: str  # "pattern" or "bioio-imagexpress"
    wells: int
    fields: int
    channels: list[str]
    shape: tuple[int, ...]  # (T, C, Z, Y, X) of every field
    dtype: str
    pixel_size: float | None  # um
    ignored: int  # files that matched no pattern
    version: str
    wall_s: float


def plate_layout(fields: list[FieldSource], layout: tuple[int, int] | None = None) -> tuple[list[str], list[str]]:
    """The plate's row and column names: ``layout`` (rows, columns), else the smallest standard plate holding the wells.

    Parameters
    ----------
    fields : list of FieldSource
        The plate's fields.
    layout : tuple of int, optional
        ``(rows, columns)`` of the plate format, e.g. ``(8, 12)``; ignored
        when a well lies outside it.

    Returns
    -------
    rows, columns : list of str
        ``["A", "B", ...]`` and ``["1", "2", ...]``.
    """

    def index(row: str) -> int:  # "A" -> 0, "AA" -> 26
        return sum((ord(ch) - 64) * 26 ** i for i, ch in enumerate(reversed(row))) - 1

    need = (max(index(f.row) for f in fields) + 1, max(int(f.column) for f in fields))
    options = ([layout] if layout else []) + list(STANDARD_PLATES) + [need]
    n_rows, n_cols = next((r, c) for r, c in options if r >= need[0] and c >= need[1])
    return [row_name(str(r)) for r in range(1, n_rows + 1)], [str(c) for c in range(1, n_cols + 1)]


def pyramid(shape_yx: tuple[int, int]) -> tuple[int, ...]:
    """The pyramid's downsampling factors (ome-zarr-py ``scale_factors``): 2, 4, ... while the short side stays >= 256."""
    factors, f = [], 2
    while min(shape_yx) // f >= SMALLEST_LEVEL and len(factors) < MAX_LEVELS - 1:
        factors.append(f)
        f *= 2
    return tuple(factors)


def omero(channels: list[str], first: np.ndarray) -> dict:
    """The ``omero`` metadata: per channel its label, a colour and a window (the dtype's range, the first field's).

    Parameters
    ----------
    channels : list of str
        Channel names.
    first : numpy.ndarray
        The first field, ``(T, C, Z, Y, X)``: its per-channel min and max
        are the display window (``start``, ``end``) of every field.
    """
    out = []
    for c, name in enumerate(channels):
        plane = first[:, c]
        lo, hi = float(plane.min()), float(plane.max())
        if np.issubdtype(first.dtype, np.integer):
            info = np.iinfo(first.dtype)
            lo_max, hi_max = float(info.min), float(info.max)
        else:
            lo_max, hi_max = lo, hi
        out.append({"label": name, "color": COLORS[c % len(COLORS)], "active": True,
                    "window": {"min": lo_max, "max": hi_max, "start": lo, "end": hi}})
    return {"channels": out}


def _axes(shape: tuple[int, ...]) -> str:
    """The image's axes for a ``(T, C, Z, Y, X)`` field: ``cyx``, with ``t``/``z`` when there are several."""
    t, _, z = shape[:3]
    return ("t" if t > 1 else "") + "c" + ("z" if z > 1 else "") + "yx"


def _check(field: FieldSource, data: np.ndarray, first: tuple[FieldSource, np.ndarray] | None, folder: Path,
           n_channels: int) -> None:
    """Refuse a field whose shape or dtype differs from the first field's (one line naming both)."""
    where = folder / field.label
    if data.ndim != 5 or data.shape[1] != n_channels:
        raise HtsError(f"{where}: {data.shape[1] if data.ndim == 5 else '?'} channel(s), but the plate has "
                       f"{n_channels}; every field needs the same channels")
    if first is None:
        return
    ref, ref_data = first
    if data.shape != ref_data.shape or data.dtype != ref_data.dtype:
        def text(a):
            t, _, z, y, x = a.shape
            return f"{y}x{x} {a.dtype}" + (f", {t} t x {z} z" if (t, z) != (1, 1) else "")

        raise HtsError(f"{where}: {text(data)}, but the first field {folder / ref.label} is {text(ref_data)}; every "
                       "field of a plate must have one shape and dtype")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` without ``overwrite``, one that is not a Zarr group, or a missing parent folder."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise HtsError(f"{out}: exists; give --overwrite to replace it")
        if not out.is_dir() or not ((out / "zarr.json").is_file() or (out / ".zgroup").is_file()):
            raise HtsError(f"{out}: exists and is not a Zarr group; not replaced (remove it, or choose another OUT)")
    if not out.parent.is_dir():
        raise HtsError(f"{out}: its folder {out.parent} does not exist")


def import_plate(folder: str | os.PathLike, out: str | os.PathLike, *, pattern: str | None = None,
                 version: str = "0.5", channel_names: list[str] | None = None, pixel_size: float | None = None,
                 plate: str | None = None, overwrite: bool = False, progress: bool = True) -> ImportSummary:
    """Write the plate in ``folder`` (per-field, per-channel TIFFs) as an OME-Zarr HCS plate at ``out``.

    Parameters
    ----------
    folder : str or os.PathLike
        The instrument's export (:func:`hts.io.tiff_folder.open_folder`).
    out : str or os.PathLike
        The plate's Zarr folder, e.g. ``plate.zarr``.
    pattern : str, optional
        ``--pattern``: a preset or regular expression
        (:func:`~hts.io.tiff_folder.compile_pattern`); default: an
        ImageXpress ``.jdce`` acquisition through bioio-imagexpress, else
        the ``imagexpress`` preset.
    version : str
        NGFF version, ``"0.5"`` (Zarr v3) or ``"0.4"`` (Zarr v2).
    channel_names : list of str, optional
        One name per channel, replacing the instrument's (or ``w1, w2, ...``).
    pixel_size : float, optional
        um per px, replacing the instrument's.
    plate : str, optional
        Which plate, when the files name several.
    overwrite : bool
        Replace an existing ``out`` (a Zarr group; the new plate replaces
        it in one step when complete).
    progress : bool
        A progress bar over fields on stderr (only on a terminal).

    Returns
    -------
    ImportSummary

    Raises
    ------
    HtsError
        Bad folder, pattern, options or files (one line naming the file or
        option); ``out`` is then as it was.
    """
    start = time.perf_counter()
    folder, out = Path(folder), Path(out)
    if version not in FORMATS:
        raise HtsError(f"--ngff {version}: one of {', '.join(FORMATS)}")
    if pixel_size is not None and not pixel_size > 0:
        raise HtsError(f"--pixel-size {pixel_size}: must be > 0 (um per px)")
    _check_out(out, overwrite)
    source = open_folder(folder, pattern, plate)
    channels = list(source.channels)
    if channel_names is not None:
        if len(channel_names) != len(channels) or len(set(channel_names)) != len(channel_names) or not all(channel_names):
            raise HtsError(f"--channel-names {','.join(channel_names)}: {len(channels)} distinct names needed, "
                           f"one per channel (found {', '.join(channels)})")
        channels = list(channel_names)
    size = pixel_size if pixel_size is not None else source.pixel_size
    fmt = FORMATS[version]()
    shape, dtype = _write(source, out, fmt, channels, size, progress)
    return ImportSummary(out, source.name, source.reader, len({f.well for f in source.fields}), len(source.fields),
                         channels, shape, str(dtype), size, len(source.ignored), version,
                         time.perf_counter() - start)


def _write(source: PlateSource, out: Path, fmt, channels: list[str], size: float | None,
           progress: bool) -> tuple[tuple[int, ...], np.dtype]:
    """Write the plate, one field at a time, staged beside ``out``; the first field's shape and dtype."""
    rows, columns = plate_layout(source.fields, source.layout)
    wells = list(dict.fromkeys(f.well for f in source.fields))
    per_well: dict[str, list[FieldSource]] = {w: [] for w in wells}
    for f in source.fields:
        per_well[f.well].append(f)
    first: tuple[FieldSource, np.ndarray] | None = None
    meta: dict = {}
    with staged_group(out, fmt.zarr_format) as root:
        write_plate_metadata(root, rows, columns, wells, fmt=fmt, field_count=max(map(len, per_well.values())),
                             name=source.name)
        with tqdm(total=len(source.fields), desc="import", unit="field", disable=None if progress else True) as bar:
            for well, fields in per_well.items():
                group = root.require_group(well)
                write_well_metadata(group, [str(i) for i in range(len(fields))], fmt=fmt)
                for i, f in enumerate(fields):
                    data = f.read()
                    _check(f, data, first, source.folder, len(channels))
                    if first is None:
                        first = (f, data)
                        meta = _image_meta(data, channels, size)
                    axes = meta["axes"]
                    image = data[tuple(slice(None) if a in axes else 0 for a in "tczyx")]
                    write_image(image, group.require_group(str(i)), fmt=fmt, **meta)
                    bar.update()
    assert first is not None  # open_folder returns at least one field
    return first[1].shape, first[1].dtype


def _image_meta(first: np.ndarray, channels: list[str], size: float | None) -> dict:
    """The ``write_image`` keywords shared by every field: axes, pyramid, chunks, scale, units, omero."""
    axes = _axes(first.shape)
    yx = first.shape[-2:]
    chunks = tuple(1 for _ in axes[:-2]) + tuple(min(n, CHUNK) for n in yx)
    scale = {a: 1.0 for a in axes} | ({"y": size, "x": size} if size else {})
    meta = {"axes": axes, "scale_factors": pyramid(yx), "storage_options": {"chunks": chunks}, "scale": scale,
            "omero": omero(channels, first)}
    if size:
        meta["axes_units"] = {"y": "micrometer", "x": "micrometer"}
    return meta
