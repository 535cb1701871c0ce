"""Counting: per-nucleus measurements of a label image, and per-field / per-well count tables (numpy and pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd

NUCLEUS_COLUMNS = ["label", "centroid_y", "centroid_x", "area", "mean_intensity", "max_intensity", "eccentricity"]
_DTYPES = (np.uint32, np.float64, np.float64, np.int64, np.float64, np.float64, np.float64)  # of NUCLEUS_COLUMNS
WELL_COLUMNS = ["well", "row", "column", "fields", "n_nuclei", "mean_per_field", "mean_area", "mean_intensity"]


def measure_nuclei(labels: np.ndarray, image: np.ndarray) -> pd.DataFrame:
    """One row per nucleus: label, centroid, area and intensities, the per-nucleus table of a run.

    The values of :func:`skimage.measure.regionprops_table` (``centroid``,
    ``area``, ``intensity_mean``, ``intensity_max``, ``eccentricity``; rows
    in label order), computed with one ``bincount`` per moment over the
    foreground pixels instead of regionprops' Python loop over nuclei, which
    was a large share of a field's post-processing (timings:
    docs/performance.md). Solidity is left out: a convex hull per nucleus
    costs more than the watershed.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Instance labels, 0 = background; ids need not be sequential or dense
        (a slide block's global labels).
    image : (H, W) ndarray
        The intensity plane measured (any real dtype).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`NUCLEUS_COLUMNS`: ``label`` (uint32), ``centroid_y``,
        ``centroid_x`` (px), ``area`` (px^2, int64), ``mean_intensity``,
        ``max_intensity`` (image units), ``eccentricity`` (in [0, 1]).

    Raises
    ------
    ValueError
        When ``labels`` and ``image`` differ in shape.
    """
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    m = label_moments(labels)
    if m["label"].size == 0:
        return pd.DataFrame({c: np.empty(0, t) for c, t in zip(NUCLEUS_COLUMNS, _DTYPES)})
    pix, k, n_bins = m["pixels"], m["bins"], m["n_bins"]
    inten = np.asarray(image, np.float32).ravel()[pix].astype(np.float64)
    peak = np.full(n_bins, -np.inf)
    np.maximum.at(peak, k, inten)
    present = m["present"]
    mean = np.bincount(k, weights=inten, minlength=n_bins)[present] / m["area"]
    l1, l2 = m["inertia"]
    ecc = np.sqrt(1 - np.divide(l2, l1, out=np.ones_like(l1), where=l1 > 0))  # a 1-px nucleus (l1 = 0): 0
    return pd.DataFrame({
        "label": m["label"].astype(np.uint32), "centroid_y": m["centroid"][0], "centroid_x": m["centroid"][1],
        "area": m["area"].astype(np.int64), "mean_intensity": mean, "max_intensity": peak[present],
        "eccentricity": ecc,
    })[NUCLEUS_COLUMNS]


def label_moments(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Area, centroid and inertia eigenvalues of every label, by one ``bincount`` per moment.

    The same values as :func:`skimage.measure.regionprops` (``area``,
    ``centroid``, ``inertia_tensor_eigvals``) without its Python loop over
    labels; the eccentricity is ``sqrt(1 - l2 / l1)`` and the axis lengths
    ``4 sqrt(l1)``, ``4 sqrt(l2)``, as skimage defines them.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Instance labels, 0 = background; ids need not be sequential or dense.

    Returns
    -------
    dict
        ``label`` (N,) the ids present, ascending; ``area`` (N,) px^2 as
        float64; ``centroid`` (2, N) row and column, px; ``inertia`` (2, N)
        the larger and smaller eigenvalue of the coordinates' covariance
        (px^2); and, to measure more per-pixel quantities with the same
        index, ``pixels`` (the flat indices of the labelled pixels),
        ``bins`` (each one's bin), ``n_bins`` and ``present`` (the bins of
        the N labels).
    """
    flat = np.asarray(labels).ravel()
    pix = np.flatnonzero(flat)
    if pix.size == 0:
        empty = np.empty(0)
        return {"label": empty.astype(np.int64), "area": empty, "centroid": np.empty((2, 0)),
                "inertia": np.empty((2, 0)), "pixels": pix, "bins": pix, "n_bins": 0, "present": pix}
    ids = flat[pix].astype(np.int64)
    if ids.max() > 4 * pix.size + 1024:  # sparse ids (a slide block's global labels): compact them first
        values, k = np.unique(ids, return_inverse=True)
    else:
        values, k = None, ids
    area_all = np.bincount(k)
    present = np.flatnonzero(area_all)
    y, x = np.divmod(pix, labels.shape[1])
    y, x = y.astype(np.float64), x.astype(np.float64)

    def mean_of(w: np.ndarray) -> np.ndarray:  # per-label mean of a per-pixel quantity, for every bin
        return np.bincount(k, weights=w, minlength=area_all.size) / np.maximum(area_all, 1)

    cy, cx = mean_of(y), mean_of(x)
    dy, dx = y - cy[k], x - cx[k]
    myy, mxx, mxy = (mean_of(v)[present] for v in (dy * dy, dx * dx, dy * dx))
    half_sum, root = (myy + mxx) / 2, np.sqrt(((myy - mxx) / 2) ** 2 + mxy**2)
    return {"label": values[present] if values is not None else present, "area": area_all[present].astype(np.float64),
            "centroid": np.stack([cy[present], cx[present]]),
            "inertia": np.stack([half_sum + root, np.maximum(half_sum - root, 0)]),
            "pixels": pix, "bins": k, "n_bins": area_all.size, "present": present}


def measure_nuclei_3d(labels: np.ndarray, stack: np.ndarray) -> pd.DataFrame:
    """One row per 3D nucleus of a z-stack: label, centroid, volume and intensities (``--z all``).

    Parameters
    ----------
    labels : (Z, H, W) int ndarray
        3D instance labels (:func:`hts.engine.zlink.link_planes`), 0 = background.
    stack : (Z, H, W) ndarray
        The intensity planes.

    Returns
    -------
    pandas.DataFrame
        ``label`` (uint32), ``centroid_z``, ``centroid_y``, ``centroid_x``
        (planes, px), ``area`` (the volume in voxels, so that the per-field
        summaries of 2D runs apply), ``planes`` (z-planes the nucleus spans),
        ``mean_intensity``, ``max_intensity``; rows in label order.
    """
    if labels.shape != stack.shape:
        raise ValueError(f"labels {labels.shape} and stack {stack.shape} differ in shape")
    flat = np.asarray(labels).ravel()
    pix = np.flatnonzero(flat)
    values, k = np.unique(flat[pix], return_inverse=True)
    n = np.bincount(k, minlength=values.size).astype(np.float64)
    z, y, x = np.unravel_index(pix, labels.shape)
    inten = np.asarray(stack, np.float64).ravel()[pix]
    peak = np.full(values.size, -np.inf)
    np.maximum.at(peak, k, inten)
    zmin, zmax = np.full(values.size, labels.shape[0]), np.full(values.size, -1)
    np.minimum.at(zmin, k, z)
    np.maximum.at(zmax, k, z)

    def mean(w: np.ndarray) -> np.ndarray:
        return np.bincount(k, weights=w, minlength=values.size) / np.maximum(n, 1)

    return pd.DataFrame({"label": values.astype(np.uint32), "centroid_z": mean(z.astype(float)),
                         "centroid_y": mean(y.astype(float)), "centroid_x": mean(x.astype(float)),
                         "area": n.astype(np.int64), "planes": (zmax - zmin + 1).astype(np.int64),
                         "mean_intensity": mean(inten), "max_intensity": peak if values.size else peak})


def field_quality(plane: np.ndarray) -> dict[str, float]:
    """Per-field image statistics for quality control (see :mod:`hts.analysis.qc`).

    ``saturated_fraction``: fraction of pixels at the dtype's maximum (integer
    images; 0 for float). ``focus``: variance of the Laplacian of the plane
    divided by its squared mean (dimensionless; blur lowers it).
    ``mean_plane_intensity``: mean pixel value.

    Parameters
    ----------
    plane : (H, W) ndarray
        The nucleus channel of one field, its stored dtype.

    Returns
    -------
    dict of str to float
        ``saturated_fraction`` (in [0, 1]), ``focus`` (>= 0) and
        ``mean_plane_intensity`` (image units).
    """
    from scipy import ndimage

    x = np.asarray(plane)
    sat = float((x == np.iinfo(x.dtype).max).mean()) if np.issubdtype(x.dtype, np.integer) else 0.0
    f = x.astype(np.float32)
    mean = float(f.mean())
    focus = float(ndimage.laplace(f).var() / mean**2) if mean > 0 else 0.0
    return {"saturated_fraction": sat, "focus": focus, "mean_plane_intensity": mean}


def well_table(fields: pd.DataFrame) -> pd.DataFrame:
    """Per-well counts from a per-field table (columns well, row, column, n_nuclei, mean_area, mean_intensity).

    ``mean_area`` and ``mean_intensity`` are nucleus-weighted means over the
    well's fields, so a field with more nuclei counts more.

    Parameters
    ----------
    fields : pandas.DataFrame
        One row per field, in plate order.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`WELL_COLUMNS`, one row per well in order of first
        appearance (plate order: row, then column); ``mean_area`` in px^2,
        NaN for a well without nuclei.
    """
    if fields.empty:
        return pd.DataFrame(columns=WELL_COLUMNS)
    f = fields.assign(_area=fields["mean_area"].fillna(0) * fields["n_nuclei"],
                      _int=fields["mean_intensity"].fillna(0) * fields["n_nuclei"])
    g = f.groupby(["well", "row", "column"], sort=False)
    out = g.agg(fields=("n_nuclei", "size"), n_nuclei=("n_nuclei", "sum"), _area=("_area", "sum"),
                _int=("_int", "sum")).reset_index()
    out["mean_per_field"] = out["n_nuclei"] / out["fields"]
    n = out["n_nuclei"].where(out["n_nuclei"] > 0)
    out["mean_area"] = out["_area"] / n
    out["mean_intensity"] = out["_int"] / n
    return out[WELL_COLUMNS]


def image_table(fields: pd.DataFrame, plate: str) -> pd.DataFrame:
    """The CellProfiler-style per-image table: one row per field with its count and QC flags.

    Parameters
    ----------
    fields : pandas.DataFrame
        The per-field table of a run (columns ``well``, ``row``, ``column``,
        ``field``, ``n_nuclei`` and the QC measures ``saturated_fraction``,
        ``focus``, ``mean_plane_intensity``).
    plate : str
        ``Metadata_Plate``.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Plate``, ``Metadata_Well`` (``B03``; "" for a single
        image), ``Metadata_Site``, ``Image_Count_Nuclei``, the QC measures as
        ``Metadata_QC_SaturatedFraction``, ``Metadata_QC_Focus``,
        ``Metadata_QC_MeanIntensity`` and the flags of
        :func:`hts.analysis.qc.flag_fields` as booleans
        ``Metadata_QC_Empty``, ``Metadata_QC_Saturated``, ``Metadata_QC_OutOfFocus``.
    """
    from hts.analysis.platemap import well_id
    from hts.analysis.qc import flag_fields

    flagged = flag_fields(fields) if len(fields) else fields.assign(flags=pd.Series(dtype=str))
    flags = flagged["flags"].fillna("").str.split(";")
    site = fields["field"].astype(str)
    return pd.DataFrame({
        "Metadata_Plate": plate,
        "Metadata_Well": [well_id(r, c) if w else "" for w, r, c in zip(fields["well"], fields["row"], fields["column"])],
        "Metadata_Site": [int(s) if s.isdigit() else s for s in site],
        "Image_Count_Nuclei": pd.to_numeric(fields["n_nuclei"]).astype(np.int64),
        "Metadata_QC_SaturatedFraction": pd.to_numeric(fields["saturated_fraction"], errors="coerce"),
        "Metadata_QC_Focus": pd.to_numeric(fields["focus"], errors="coerce"),
        "Metadata_QC_MeanIntensity": pd.to_numeric(fields["mean_plane_intensity"], errors="coerce"),
        "Metadata_QC_Empty": [("empty" in f) for f in flags],
        "Metadata_QC_Saturated": [("saturated" in f) for f in flags],
        "Metadata_QC_OutOfFocus": [("out_of_focus" in f) for f in flags],
    }, index=fields.index)


def plate_matrix(wells: pd.DataFrame, rows: list[str], columns: list[str], column: str) -> np.ndarray:
    """``wells[column]`` laid out as the plate; NaN where a well is absent.

    Parameters
    ----------
    wells : pandas.DataFrame
        Per-well table with ``row`` and ``column`` (names) and the values.
    rows, columns : list of str
        The plate layout's row and column names, in order.
    column : str
        The numeric column to lay out.

    Returns
    -------
    (len(rows), len(columns)) float64 ndarray
    """
    m = np.full((len(rows), len(columns)), np.nan)
    ri, ci = {r: i for i, r in enumerate(rows)}, {c: i for i, c in enumerate(columns)}
    for r, c, v in zip(wells["row"].astype(str), wells["column"].astype(str), pd.to_numeric(wells[column])):
        if r in ri and c in ci:
            m[ri[r], ci[c]] = v
    return m


def table_layout(wells: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The row and column names present in a per-well table, in plate order (``B`` < ``AA``; ``2`` < ``10``)."""
    rows = sorted(set(wells.get("row", [])), key=lambda r: (len(r), r))
    cols = sorted(set(wells.get("column", [])), key=lambda c: (len(c), c))
    return rows, cols
