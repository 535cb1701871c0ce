"""The results folder of a run: done markers, nucleus tables, count tables, the run record and the lock.

For an output Zarr ``plate.zarr`` the results live beside it in
``plate.hts/`` (kept out of the Zarr hierarchy so NGFF readers see only
NGFF):

- ``fields/<key>.json``: a field's done marker (its counts), written
  atomically after its labels and nucleus table: a field without a valid
  one (absent, empty, unreadable) is not done, whatever else exists;
- ``nuclei/<key>.parquet``: one row per nucleus of the field;
- ``fields.csv|parquet``, ``wells.csv|parquet``, ``nuclei.parquet``: the
  tables, rebuilt from the markers at the end of each run; ``nuclei.parquet``
  also holds the CellProfiler-named columns (``Metadata_*``, ``Nuclei_*``,
  ``Cytoplasm_*``) and ``image.parquet`` is the per-image table that
  pycytominer reads; with a platemap its columns join every table as
  ``Metadata_<column>``;
- ``run.json``: parameters, model checksum, versions, wall time, failures;
- ``settings.json``: what the done fields were segmented with (model
  checksum, channel, z, diameter, size rule), so that a resumed run adds
  only fields made the same way;
- ``lock``: held (``flock``) by the running ``hts run``; the kernel
  releases it when the process dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hts.analysis.count import image_table, well_table
from hts.analysis.platemap import join_platemap, metadata_columns
from hts.errors import HtsError
from hts.io.atomic import atomic_write
from hts.io.ngff import FieldRef
from hts.io.ngff_meta import FORMATS

FIELD_COLUMNS = ["well", "row", "column", "field", "path", "n_nuclei", "mean_area", "mean_intensity",
                 "saturated_fraction", "focus", "mean_plane_intensity"]


def _columns(series: bool) -> list[str]:
    """The per-field table's columns; a time series has ``t`` after ``field``."""
    if not series:
        return FIELD_COLUMNS
    i = FIELD_COLUMNS.index("field") + 1
    return [*FIELD_COLUMNS[:i], "t", *FIELD_COLUMNS[i:]]


def results_dir(zarr_root: str | os.PathLike) -> Path:
    """The results folder of an output Zarr: ``plate.zarr`` -> ``plate.hts`` (beside it).

    Parameters
    ----------
    zarr_root : str or os.PathLike
        The output Zarr root (need not exist).

    Returns
    -------
    pathlib.Path
        The absolute path of the results folder (not created).
    """
    p = Path(zarr_root).resolve()
    return p.with_name((p.stem if p.suffix == ".zarr" else p.name) + ".hts")


class Results:
    """One results folder (created on first use).

    Parameters
    ----------
    path : str or os.PathLike
        The folder (:func:`results_dir` of the output Zarr).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    @staticmethod
    def fmt_of(version: str):
        """The ome-zarr-py format of NGFF ``version`` (``"0.4"`` or ``"0.5"``)."""
        return FORMATS[version]()

    def marker(self, ref: FieldRef) -> Path:
        """The done marker's path of field ``ref``: ``fields/<key>.json``."""
        return self.path / "fields" / f"{ref.key}.json"

    def is_done(self, ref: FieldRef) -> bool:
        """Whether field ``ref`` has a valid done marker (one that is empty or unreadable does not count)."""
        return _read_marker(self.marker(ref)) is not None

    def commit(self, ref: FieldRef, table: pd.DataFrame, pixels: int, seconds: float = 0.0,
               extra: dict | None = None) -> dict:
        """Write the field's nucleus table, then its done marker (both atomically).

        Parameters
        ----------
        ref : FieldRef
            The field.
        table : pandas.DataFrame
            One row per nucleus (with ``area`` in px and ``mean_intensity``
            in input units); ``well`` and ``field`` columns are added.
        pixels : int
            Pixels segmented.
        seconds : float
            Wall time spent on the field, s.
        extra : dict, optional
            More JSON-able values for the marker (e.g. QC measures).

        Returns
        -------
        dict
            The marker's content: key, well, row, column, field, path,
            ``n_nuclei``, ``mean_area`` (px), ``mean_intensity``, ``pixels``,
            ``seconds`` and the entries of ``extra``.
        """
        (self.path / "nuclei").mkdir(parents=True, exist_ok=True)
        (self.path / "fields").mkdir(parents=True, exist_ok=True)
        table = table.assign(well=ref.well or "", field=ref.field or "")
        atomic_write(self.path / "nuclei" / f"{ref.key}.parquet", lambda f: table.to_parquet(f, index=False))
        n = len(table)
        summary = {"key": ref.key, "well": ref.well or "", "row": ref.row or "", "column": ref.column or "",
                   "field": ref.field or "", "path": ref.path, "n_nuclei": n,
                   "mean_area": float(table["area"].mean()) if n else None,
                   "mean_intensity": float(table["mean_intensity"].mean()) if n else None,
                   "pixels": int(pixels), "seconds": round(seconds, 3), **(extra or {})}
        atomic_write(self.marker(ref), json.dumps(summary).encode())
        return summary

    def sweep(self) -> list[Path]:
        """Delete the temporary files of writes a killed run left midway (call it holding the lock)."""
        from hts.io.staging import sweep

        return [p for d in (self.path, self.path / "fields", self.path / "nuclei") for p in sweep(d)]

    def forget(self) -> None:
        """Drop every done marker and the tables built from them (``--overwrite``): all fields are recomputed."""
        for p in (self.path / "fields").glob("*.json"):
            p.unlink()
        (self.path / "settings.json").unlink(missing_ok=True)
        self.invalidate()

    def settings(self) -> dict | None:
        """The segmentation settings of the done fields (None: none recorded)."""
        p = self.path / "settings.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def write_settings(self, settings: dict) -> None:
        """Record (atomically) what the done fields are segmented with: a JSON-able dict."""
        atomic_write(self.path / "settings.json", json.dumps(settings, indent=2).encode())

    def invalidate(self) -> None:
        """Remove the run-level tables and record: they come back only when a run ends."""
        for name in ("wells.csv", "wells.parquet", "fields.csv", "fields.parquet", "nuclei.parquet", "image.parquet",
                     "screen.json", "run.json"):
            (self.path / name).unlink(missing_ok=True)

    def done_fields(self) -> pd.DataFrame:
        """The per-field table from the done markers.

        Returns
        -------
        pandas.DataFrame
            One row per done field, sorted by key, columns ``key`` and
            :data:`FIELD_COLUMNS` (empty with those columns when none is done).
        """
        rows = [m for p in sorted((self.path / "fields").glob("*.json")) if (m := _read_marker(p)) is not None]
        if not rows:
            return pd.DataFrame(columns=["key", *FIELD_COLUMNS])
        columns = _columns(any(r.get("t") is not None for r in rows))
        return pd.DataFrame(rows).reindex(columns=["key", *columns])

    def write_tables(self, order: list[FieldRef], plate: str = "",
                     platemap: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rebuild fields/wells/nuclei/image tables (each written atomically) from the done fields of ``order``.

        Parameters
        ----------
        order : list of FieldRef
            The fields of the run in table order; fields not done are left out.
        plate : str
            ``Metadata_Plate`` of the image table.
        platemap : pandas.DataFrame, optional
            A :func:`hts.analysis.platemap.read_platemap` table: its columns
            join every table as ``Metadata_<column>``.

        Returns
        -------
        fields : pandas.DataFrame
            :data:`FIELD_COLUMNS`, one row per done field of ``order``.
        wells : pandas.DataFrame
            One row per well (:func:`hts.analysis.count.well_table`); empty
            for a single image.
        """
        rank = {r.key: i for i, r in enumerate(order)}
        fields = self.done_fields()
        fields = fields[fields["key"].isin(rank)]
        fields = fields.iloc[fields["key"].map(rank).argsort()].reset_index(drop=True)
        keys = list(fields["key"])
        series = "t" in fields
        fields = fields[_columns(series)]
        if series:  # a time series: one row per well and time point
            fields["t"] = fields["t"].astype(np.int64)
            wells = pd.concat([well_table(part).assign(t=t) for t, part in fields.groupby("t", sort=True)],
                              ignore_index=True) if (fields["well"] != "").any() else well_table(fields.iloc[:0])
        else:
            wells = well_table(fields) if (fields["well"] != "").any() else well_table(fields.iloc[:0])
        image = image_table(fields, plate)
        if series:
            image.insert(3, "Metadata_Timepoint", fields["t"].to_numpy())
        image = join_platemap(image, platemap, "Metadata_Well")
        fields, wells = join_platemap(fields, platemap), join_platemap(wells, platemap)
        for name, df in (("fields", fields), ("wells", wells)):
            atomic_write(self.path / f"{name}.csv", df.to_csv(index=False).encode())
            atomic_write(self.path / f"{name}.parquet", lambda f, df=df: df.to_parquet(f, index=False))
        atomic_write(self.path / "image.parquet", lambda f: image.to_parquet(f, index=False))
        if keys:
            self._write_nuclei(keys, platemap)
        return fields, wells

    def _write_nuclei(self, keys: list[str], platemap: pd.DataFrame | None = None) -> None:
        """``nuclei.parquet``: the fields' nucleus tables in ``keys`` order, one row group per field.

        Streamed field by field, so memory holds one field's table, not the
        plate's (a plate can have tens of millions of nuclei); the platemap's
        columns are joined to each field's rows.
        """
        import pyarrow as pa

        files = [self.path / "nuclei" / f"{k}.parquet" for k in keys]
        # one schema for all fields (an empty field's columns have no type of their own), then the
        # platemap's columns typed from the whole map, not from a field whose well it lacks (all NaN)
        schema = pa.unify_schemas([pq.read_schema(p) for p in files], promote_options="permissive")
        if platemap is not None:
            for f in pa.Schema.from_pandas(metadata_columns(platemap), preserve_index=False):
                schema = schema.append(f)

        def write(f) -> None:
            with pq.ParquetWriter(f, schema) as writer:
                for p in files:
                    part = pq.read_table(p)
                    if platemap is not None:
                        part = pa.Table.from_pandas(join_platemap(part.to_pandas(), platemap), preserve_index=False)
                    writer.write_table(part.select(schema.names).cast(schema))

        atomic_write(self.path / "nuclei.parquet", write)

    def write_record(self, record: dict) -> None:
        """Write ``run.json`` (atomically): the run's JSON-able record (values JSON does not know become strings)."""
        atomic_write(self.path / "run.json", json.dumps(record, indent=2, default=str).encode())

    def lock(self) -> None:
        """Take the run lock or fail: two runs never write the same output.

        Raises
        ------
        HtsError
            Another process holds the lock (named by its pid and host).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise HtsError(f"{self.path}: cannot create the results folder ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise HtsError(f"{self.path}: another hts run ({holder}) is writing this output; wait for it or "
                           "choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the run lock (if held)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _read_marker(path: Path) -> dict | None:
    """A done marker's content, or None when it is absent, empty or not a marker (e.g. a file cut short)."""
    try:
        marker = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("key"), str) else None


def read_counts(path: str | os.PathLike, fields: bool = False, by_time: bool = False) -> pd.DataFrame:
    """The per-well (or per-field, or per well and time point) table of a run's output Zarr or results folder.

    Warns on stderr when the run did not finish every field.

    Parameters
    ----------
    path : str or os.PathLike
        The output Zarr or its ``.hts`` results folder.
    fields : bool
        The per-field table instead of the per-well one.
    by_time : bool
        ``well,t,n_nuclei``: nuclei per well and time point, from the fields
        of a time series (refused for a run without time points).

    Returns
    -------
    pandas.DataFrame
        ``wells.csv`` (or ``fields.csv``), with ``row``, ``column`` and
        ``field`` read as strings.

    Raises
    ------
    HtsError
        The table does not exist (no finished run).
    """
    p = Path(path)
    folder = p if p.suffix == ".hts" else results_dir(p)
    table = folder / ("fields.csv" if fields or by_time else "wells.csv")
    if not table.is_file():
        raise HtsError(f"{path}: no counts found ({table} does not exist); run `hts run {path}` first")
    record = folder / "run.json"
    if record.is_file():
        summary = json.loads(record.read_text())["summary"]
        if summary["done"] < summary["fields"]:
            print(f"hts: warning: incomplete run: {summary['done']}/{summary['fields']} fields done",
                  file=sys.stderr)
    out = pd.read_csv(table, dtype={"column": str, "row": str, "field": str})
    if by_time:
        if "t" not in out:
            raise HtsError(f"{path}: not a time series (no t column in {table}); use `hts counts` without --by-time")
        out = out.groupby(["well", "t"], sort=False)["n_nuclei"].sum().reset_index()
    return out
