"""The results folder of a run: done markers, nucleus tables, count tables, the run record and the lock.

For an output Zarr ``plate.zarr`` the results live beside it in
``plate.hts/`` (kept out of the Zarr hierarchy so NGFF readers see only
NGFF):

- ``fields/<key>.json``: a field's done marker (its counts), written
  atomically after its labels and nucleus table: a field without one is
  not done, whatever else exists;
- ``nuclei/<key>.parquet``: one row per nucleus of the field;
- ``fields.csv|parquet``, ``wells.csv|parquet``, ``nuclei.parquet``: the
  tables, rebuilt from the markers at the end of each run;
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

import pandas as pd
import pyarrow.parquet as pq

from hts.analysis.count import well_table
from hts.errors import HtsError
from hts.io.ngff import FORMATS, FieldRef

FIELD_COLUMNS = ["well", "row", "column", "field", "path", "n_nuclei", "mean_area", "mean_intensity",
                 "saturated_fraction", "focus", "mean_plane_intensity"]


def results_dir(zarr_root: str | os.PathLike) -> Path:
    """``plate.zarr`` -> ``plate.hts`` (beside it)."""
    p = Path(zarr_root).resolve()
    return p.with_name((p.stem if p.suffix == ".zarr" else p.name) + ".hts")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Results:
    """One results folder (created on first use)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    @staticmethod
    def fmt_of(version: str):
        return FORMATS[version]()

    def marker(self, ref: FieldRef) -> Path:
        return self.path / "fields" / f"{ref.key}.json"

    def is_done(self, ref: FieldRef) -> bool:
        return self.marker(ref).is_file()

    def commit(self, ref: FieldRef, table: pd.DataFrame, pixels: int, seconds: float = 0.0,
               extra: dict | None = None) -> dict:
        """Write the field's nucleus table, then its done marker (atomically); returns the marker's content."""
        (self.path / "nuclei").mkdir(parents=True, exist_ok=True)
        (self.path / "fields").mkdir(parents=True, exist_ok=True)
        table = table.assign(well=ref.well or "", field=ref.field or "")
        tmp = self.path / "nuclei" / f".{ref.key}.{os.getpid()}.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, self.path / "nuclei" / f"{ref.key}.parquet")
        n = len(table)
        summary = {"key": ref.key, "well": ref.well or "", "row": ref.row or "", "column": ref.column or "",
                   "field": ref.field or "", "path": ref.path, "n_nuclei": n,
                   "mean_area": float(table["area"].mean()) if n else None,
                   "mean_intensity": float(table["mean_intensity"].mean()) if n else None,
                   "pixels": int(pixels), "seconds": round(seconds, 3), **(extra or {})}
        _atomic_write(self.marker(ref), json.dumps(summary).encode())
        return summary

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
        _atomic_write(self.path / "settings.json", json.dumps(settings, indent=2).encode())

    def invalidate(self) -> None:
        """Remove the run-level tables and record: they come back only when a run ends."""
        for name in ("wells.csv", "wells.parquet", "fields.csv", "fields.parquet", "nuclei.parquet", "run.json"):
            (self.path / name).unlink(missing_ok=True)

    def done_fields(self) -> pd.DataFrame:
        """The per-field table (with ``key``) from the done markers."""
        rows = [json.loads(p.read_text()) for p in sorted((self.path / "fields").glob("*.json"))]
        if not rows:
            return pd.DataFrame(columns=["key", *FIELD_COLUMNS])
        return pd.DataFrame(rows).reindex(columns=["key", *FIELD_COLUMNS])

    def write_tables(self, order: list[FieldRef]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rebuild fields/wells/nuclei tables (CSV and Parquet) from the done fields of ``order``."""
        rank = {r.key: i for i, r in enumerate(order)}
        fields = self.done_fields()
        fields = fields[fields["key"].isin(rank)]
        fields = fields.iloc[fields["key"].map(rank).argsort()].reset_index(drop=True)
        keys = list(fields["key"])
        fields = fields[FIELD_COLUMNS]
        wells = well_table(fields) if (fields["well"] != "").any() else well_table(fields.iloc[:0])
        for name, df in (("fields", fields), ("wells", wells)):
            _atomic_write(self.path / f"{name}.csv", df.to_csv(index=False).encode())
            tmp = self.path / f".{name}.parquet.tmp"
            df.to_parquet(tmp, index=False)
            os.replace(tmp, self.path / f"{name}.parquet")
        if keys:
            self._write_nuclei(keys)
        return fields, wells

    def _write_nuclei(self, keys: list[str]) -> None:
        """``nuclei.parquet``: the fields' nucleus tables in ``keys`` order, one row group per field.

        Streamed field by field, so memory holds one field's table, not the
        plate's (a plate can have tens of millions of nuclei).
        """
        tmp = self.path / ".nuclei.parquet.tmp"
        writer = None
        try:
            for k in keys:
                part = pq.read_table(self.path / "nuclei" / f"{k}.parquet")
                if writer is None:
                    writer = pq.ParquetWriter(tmp, part.schema)
                writer.write_table(part.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()
        os.replace(tmp, self.path / "nuclei.parquet")

    def write_record(self, record: dict) -> None:
        _atomic_write(self.path / "run.json", json.dumps(record, indent=2, default=str).encode())

    def lock(self) -> None:
        """Take the run lock or fail: two runs never write the same output."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
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
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read_counts(path: str | os.PathLike, fields: bool = False) -> pd.DataFrame:
    """The per-well (or per-field) table of a run's output Zarr or results folder."""
    p = Path(path)
    folder = p if p.suffix == ".hts" else results_dir(p)
    table = folder / ("fields.csv" if fields else "wells.csv")
    if not table.is_file():
        raise HtsError(f"{path}: no counts found ({table} does not exist); run `hts run {path}` first")
    record = folder / "run.json"
    if record.is_file():
        summary = json.loads(record.read_text())["summary"]
        if summary["done"] < summary["fields"]:
            print(f"hts: warning: incomplete run: {summary['done']}/{summary['fields']} fields done",
                  file=sys.stderr)
    return pd.read_csv(table, dtype={"column": str, "row": str, "field": str})
