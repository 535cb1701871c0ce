"""Counting: per-nucleus measurements of a label image, and per-field / per-well count tables (numpy and pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

NUCLEUS_COLUMNS = ["label", "centroid_y", "centroid_x", "area", "mean_intensity", "max_intensity", "eccentricity"]
WELL_COLUMNS = ["well", "row", "column", "fields", "n_nuclei", "mean_per_field", "mean_area", "mean_intensity"]


def measure_nuclei(labels: np.ndarray, image: np.ndarray) -> pd.DataFrame:
    """One row per nucleus of ``labels (H, W)`` uint: label, centroid (px), area (px), intensities of ``image``."""
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    props = regionprops_table(labels, intensity_image=np.asarray(image, np.float32),
                              properties=("label", "centroid", "area", "intensity_mean", "intensity_max",
                                          "eccentricity"))  # no solidity: a convex hull per nucleus costs more than the watershed
    df = pd.DataFrame(props).rename(columns={"centroid-0": "centroid_y", "centroid-1": "centroid_x",
                                             "intensity_mean": "mean_intensity", "intensity_max": "max_intensity"})
    df["label"] = df["label"].astype(np.uint32)
    df["area"] = df["area"].astype(np.int64)
    return df[NUCLEUS_COLUMNS]


def field_quality(plane: np.ndarray) -> dict[str, float]:
    """Per-field image statistics for quality control (see :mod:`hts.qc`).

    ``saturated_fraction``: fraction of pixels at the dtype's maximum (integer
    images; 0 for float). ``focus``: variance of the Laplacian of the plane
    divided by its squared mean (dimensionless; blur lowers it).
    ``mean_plane_intensity``: mean pixel value.
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
    well's fields; wells come out in plate order (row, then column).
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
