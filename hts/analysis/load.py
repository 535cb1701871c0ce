"""``hts.open_results``: a run's tables as pandas DataFrames and its fields' images and labels as lazy xarrays.

Example::

    import hts

    res = hts.open_results("plate.zarr")          # or the results folder plate.hts
    res.wells                                     # one row per well: counts, z, flags
    res.fields[res.fields.flags != ""]            # the fields QC flagged
    res.nuclei.groupby("well").area.median()      # one row per nucleus
    res.labels("B/3", 0).max().compute()          # a field's labels, read lazily (dask)
    res.image("B/3", 0)[:100, :100].values        # its nucleus plane, only this crop is read
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import pandas as pd

from hts.analysis.qc import QC, run_qc
from hts.errors import HtsError
from hts.io.results import results_dir

TEXT_COLUMNS = {"well": str, "row": str, "column": str, "field": str, "path": str}


def locate(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """The results folder and output Zarr of a run, from either of them.

    Parameters
    ----------
    path : str or os.PathLike
        A run's output Zarr or its ``.hts`` results folder.

    Returns
    -------
    folder : pathlib.Path
        The results folder.
    zarr_root : pathlib.Path or None
        The output Zarr root; None when it is not found beside the folder
        (nor at the record's ``output``).

    Raises
    ------
    HtsError
        ``path`` does not exist or holds no finished run (naming it).
    """
    p = Path(path)
    if not p.exists():
        raise HtsError(f"{path}: no such file or directory")
    folder = p if p.suffix == ".hts" or (p / "run.json").is_file() else results_dir(p)
    if not (folder / "run.json").is_file() or not _table(folder, "fields"):
        raise HtsError(f"{path}: no results of a finished `hts run` ({folder / 'run.json'} not found); "
                       f"run `hts run {path}` first")
    if folder != p:
        return folder, p
    record = json.loads((folder / "run.json").read_text())
    for cand in (folder.with_suffix(".zarr"), folder.with_suffix(""), Path(str(record.get("output", "")))):
        if str(cand) and ((cand / "zarr.json").is_file() or (cand / ".zgroup").is_file()):
            return folder, cand
    return folder, None


def _table(folder: Path, name: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def read_table(folder: Path, name: str) -> pd.DataFrame:
    """A table of a results folder (Parquet if present, else CSV).

    Parameters
    ----------
    folder : pathlib.Path
        The results folder.
    name : str
        ``"fields"``, ``"wells"`` or ``"nuclei"``.

    Returns
    -------
    pandas.DataFrame
        The table, with the :data:`TEXT_COLUMNS` as strings (missing values
        as ``""``); empty when the table does not exist.
    """
    path = _table(folder, name)
    if path is None:
        return pd.DataFrame()
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype=TEXT_COLUMNS)
    for col in TEXT_COLUMNS:
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df


class PlateResults:
    """The results of one ``hts run`` (plate or single image); see the module docstring for an example.

    ``fields`` and ``wells`` carry the QC columns ``z`` and ``flags``
    (:mod:`hts.analysis.qc`); ``qc.edge`` holds the plate edge effect. ``image`` and
    ``labels`` return lazy ``xarray.DataArray`` (dims ``y, x``, dask-backed).

    Parameters
    ----------
    path : str or os.PathLike
        A run's output Zarr or its ``.hts`` results folder (:func:`locate`).
    """

    def __init__(self, path: str | os.PathLike):
        self.folder, self.zarr = locate(path)
        self.record: dict = json.loads((self.folder / "run.json").read_text())
        self.kind: str = self.record.get("kind", "plate")
        self.rows, self.columns = self._layout()
        self.qc: QC = run_qc(read_table(self.folder, "fields"), read_table(self.folder, "wells"),
                             self.rows, self.columns)

    def __repr__(self) -> str:
        s = self.record.get("summary", {})
        return (f"<PlateResults {self.kind} {self.zarr or self.folder}: {s.get('done')}/{s.get('fields')} fields, "
                f"{s.get('n_nuclei')} nuclei>")

    @property
    def fields(self) -> pd.DataFrame:
        return self.qc.fields

    @property
    def wells(self) -> pd.DataFrame:
        return self.qc.wells

    @cached_property
    def nuclei(self) -> pd.DataFrame:
        """One row per nucleus (label, centroid, area, intensities, eccentricity, well, field); read on first use."""
        return read_table(self.folder, "nuclei")

    def _layout(self) -> tuple[list[str], list[str]]:
        """Row and column names of the plate (plate metadata; else those present in the wells table)."""
        if self.kind != "plate":
            return [], []
        if self.zarr is not None:
            from hts.io.ngff import open_source

            try:
                plate = open_source(self.zarr).plate or {}
                return [str(r["name"]) for r in plate["rows"]], [str(c["name"]) for c in plate["columns"]]
            except (HtsError, KeyError):
                pass
        from hts.analysis.count import table_layout

        return table_layout(read_table(self.folder, "wells"))

    def field_path(self, well: str | None = None, field: str | int | None = None) -> str:
        """The image group path of a field inside the Zarr.

        Parameters
        ----------
        well : str, optional
            The well's path (``"B/3"``); None for a single image.
        field : str or int, optional
            The field's path in the well; None: the first field of the well.

        Returns
        -------
        str
            E.g. ``"B/3/0"``; ``""`` for a single image.

        Raises
        ------
        HtsError
            No such field among the run's fields.
        """
        if well is None or self.kind != "plate":
            return ""
        f = self.fields
        hit = f[(f["well"] == str(well)) & ((f["field"] == str(field)) if field is not None else True)]
        if hit.empty:
            raise HtsError(f"{self.folder}: no field {field} in well {well!r} (wells like {f['well'].iloc[0]!r})"
                           if len(f) else f"{self.folder}: no fields")
        return str(hit["path"].iloc[0])

    def _group(self, path: str):
        import zarr

        if self.zarr is None:
            raise HtsError(f"{self.folder}: the output Zarr of this run is not found beside it")
        return zarr.open_group(str(self.zarr / path) if path else str(self.zarr), mode="r")

    def image(self, well: str | None = None, field: str | int | None = 0, level: int = 0):
        """The nucleus plane of a field as a lazy ``(y, x)`` DataArray, as segmented.

        The run's channel, ``t = 0``, its z plane or the maximum projection
        over z (:func:`hts.io.ngff_image.select_plane`).

        Parameters
        ----------
        well : str, optional
            The well's path (``"B/3"``); None for a single image.
        field : str or int, optional
            The field's path in the well.
        level : int
            Pyramid level (0: full resolution).

        Returns
        -------
        xarray.DataArray
            Dims ``(y, x)``, dask-backed, the input's dtype and intensity
            units; ``attrs`` well, field, path, level.
        """
        import dask.array as da
        import xarray as xr

        from hts.io.ngff_image import image_info, resolve_channel, select_plane

        path = self.field_path(well, field)
        group = self._group(path)
        info = image_info(group, path)
        opts = self.record.get("options", {})
        # a field copied with --out holds one channel and one (projected) plane: nothing to resolve there
        channel = resolve_channel(info, opts.get("channel"), path) if info.axis_size("c") > 1 else 0
        z = opts.get("z") if info.axis_size("z") > 1 and isinstance(opts.get("z"), int) else None
        plane = select_plane(da.from_zarr(group[info.levels[level]]), info, channel, z)
        return xr.DataArray(plane, dims=("y", "x"), name="image",
                            attrs={"well": well or "", "field": "" if field is None else str(field), "path": path,
                                   "level": level})

    def labels(self, well: str | None = None, field: str | int | None = 0, level: int = 0):
        """The nucleus labels of a field as a lazy ``(y, x)`` DataArray.

        Parameters
        ----------
        well, field : str, int or None
            The field, as in :meth:`image`.
        level : int
            Level of the label pyramid (0: full resolution).

        Returns
        -------
        xarray.DataArray
            Dims ``(y, x)``, dask-backed, uint32, 0 = background;
            ``attrs`` well, field, path, level.
        """
        import dask.array as da
        import xarray as xr

        from hts.io.ngff_image import image_info
        from hts.io.ngff_meta import LABEL_NAME

        path = self.field_path(well, field)
        where = f"{path}/labels/{LABEL_NAME}".lstrip("/")
        group = self._group(where)
        info = image_info(group, where)
        array = da.from_zarr(group[info.levels[level]])  # the image's axes without c; one (y, x) plane
        array = array[(0,) * (array.ndim - 2)]
        return xr.DataArray(array, dims=("y", "x"), name="labels",
                            attrs={"well": well or "", "field": "" if field is None else str(field), "path": path,
                                   "level": level})

    def label_volume(self, well: str | None = None, field: str | int | None = 0, level: int = 0):
        """All the labels of a field, every time point and z-plane: a lazy DataArray in the label image's axes.

        Parameters
        ----------
        well, field : str, int or None
            The field, as in :meth:`image`.
        level : int
            Level of the label pyramid.

        Returns
        -------
        xarray.DataArray
            Dims the label image's axes (e.g. ``("t", "z", "y", "x")``), dask-backed uint32.
        """
        import dask.array as da
        import xarray as xr

        from hts.io.ngff_image import image_info
        from hts.io.ngff_meta import LABEL_NAME

        path = self.field_path(well, field)
        where = f"{path}/labels/{LABEL_NAME}".lstrip("/")
        group = self._group(where)
        info = image_info(group, where)
        return xr.DataArray(da.from_zarr(group[info.levels[level]]), dims=info.axes, name="labels",
                            attrs={"well": well or "", "field": "" if field is None else str(field), "path": path,
                                   "level": level})

    def plane(self, well: str | None, field: str | int | None, max_side: int = 0):
        """Image and labels of a field as numpy planes at one pyramid level, for thumbnails.

        Parameters
        ----------
        well : str or None
            The well's path (``"B/3"``); None for a single image.
        field : str, int or None
            The field's path in the well.
        max_side : int
            The coarsest level whose longer side is still >= ``max_side``
            px is read; 0: full resolution.

        Returns
        -------
        image : numpy.ndarray
            ``(h, w)`` nucleus plane (:meth:`image`), the input's dtype.
        labels : numpy.ndarray
            ``(h, w)`` uint32 labels (downsampled to the image's shape when
            the label pyramid has fewer levels).
        """
        import numpy as np

        from hts.io.ngff_image import image_info, level_shapes

        path = self.field_path(well, field)
        info = image_info(self._group(path), path)
        shapes = level_shapes(info)
        level = 0
        if max_side:
            level = max([i for i, s in enumerate(shapes) if max(s) >= max_side] or [0])
        lab_info = image_info(self._group(f"{path}/labels/nuclei".lstrip("/")), path)
        lab_level = min(level, len(lab_info.levels) - 1)
        img = self.image(well, field, level).values
        lab = self.labels(well, field, lab_level).values
        if lab.shape != img.shape:
            from hts.io.ngff_pyramid import downsample_to

            lab = downsample_to(lab, img.shape)
        return np.asarray(img), np.asarray(lab)


def open_results(path: str | os.PathLike) -> PlateResults:
    """Open the results of ``hts run``.

    Parameters
    ----------
    path : str or os.PathLike
        The output Zarr or its ``.hts`` results folder.

    Returns
    -------
    PlateResults
        Tables, QC and lazy images/labels of the run (see the module docstring).

    Raises
    ------
    HtsError
        ``path`` holds no finished run.
    """
    return PlateResults(path)

