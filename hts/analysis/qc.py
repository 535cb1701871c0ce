"""Quality control of a run's count tables: robust z-scores, field and well flags, plate edge effect.

Plain functions on the pandas tables of :mod:`hts.io.results`; each returns new
DataFrames with a ``flags`` column (flag names joined by ``;``, ``""`` when
none) and a ``z`` column. Thresholds are module constants (and parameters):

Field flags (the statistics come from :func:`hts.analysis.count.field_quality`):

- ``empty``: ``n_nuclei < max(EMPTY_MIN_NUCLEI, EMPTY_FRACTION x the plate's
  median field count)``: an empty or near-empty field (nothing plated, a
  missed position, a failed stain).
- ``saturated``: ``saturated_fraction > SATURATED_FRACTION``: more than 1% of
  the nucleus plane's pixels at the dtype's maximum (the camera clipped).
- ``out_of_focus``: ``focus < FOCUS_FRACTION x the plate's median focus``.
  The focus measure is the normalised variance of the Laplacian,
  ``var(laplace(plane)) / mean(plane)^2``: blur removes high spatial
  frequencies, so it drops; dividing by the squared mean makes it independent
  of exposure. It is relative (compared with the plate's median field), and
  evaluated only on fields that are not ``empty``: a field without nuclei has
  no edges to judge sharpness on (a blank plane scores 0).

Well flags: ``outlier`` when ``|z| > OUTLIER_Z``, where ``z`` is the robust
z-score of the well's mean nuclei per field across the plate's wells,
``(x - median) / (1.4826 x MAD)`` (the count per field, so wells that lost a
field compare fairly; equal to the count's z when every well has all its
fields). Field tables get the same robust ``z`` of their count across fields.

Plate edge effect (:func:`edge_effect`): the mean nuclei per field of the
outer-ring wells (first/last row or column of the plate layout) against the
inner wells; flagged when the ratio deviates from 1 by more than
``EDGE_TOLERANCE`` (evaporation and temperature gradients act on the rim).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

EMPTY_MIN_NUCLEI = 3  # a field with fewer nuclei than this is always empty
EMPTY_FRACTION = 0.10  # ... as is one below 10% of the plate's median field count
SATURATED_FRACTION = 0.01  # > 1% of pixels at the dtype maximum
FOCUS_FRACTION = 0.5  # focus below half the plate's median focus
OUTLIER_Z = 3.0  # |robust z| above this: outlier well
EDGE_TOLERANCE = 0.20  # outer/inner mean count ratio outside 1 +- 20%: edge effect
MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
MEAN_AD_SCALE = 1.2533  # mean absolute deviation -> standard deviation (fallback when MAD is 0)


def robust_z(values: pd.Series, reference: pd.Series | None = None) -> pd.Series:
    """``(x - median) / (1.4826 x MAD)``, ignoring NaN.

    When the MAD is 0 (more than half the values equal) the mean absolute
    deviation (x 1.2533) is the scale instead; when that is 0 too (all values
    equal) every z is 0. NaN values stay NaN; never inf. Robust because the
    outliers being looked for must not set the scale they are judged by.

    Parameters
    ----------
    values : pandas.Series
        Numbers (non-numeric entries count as NaN).
    reference : pandas.Series, optional
        The values that set median and scale (e.g. a plate's sample wells);
        default ``values`` themselves.

    Returns
    -------
    pandas.Series of float
        Same index as ``values``.
    """
    x = pd.to_numeric(values, errors="coerce").astype(float)
    ref = x if reference is None else pd.to_numeric(reference, errors="coerce").astype(float)
    med = ref.median()
    if np.isnan(med):
        return pd.Series(np.nan, index=x.index)
    dev = (ref - med).abs()
    scale = MAD_SCALE * dev.median()
    if not scale > 0:
        scale = MEAN_AD_SCALE * dev.mean()
    if not scale > 0:
        return (x - med) * 0.0
    return (x - med) / scale


def _join(flags: list[list[str]]) -> list[str]:
    return [";".join(f) for f in flags]


def flag_fields(fields: pd.DataFrame, empty_min: int = EMPTY_MIN_NUCLEI, empty_fraction: float = EMPTY_FRACTION,
                saturated: float = SATURATED_FRACTION, focus_fraction: float = FOCUS_FRACTION) -> pd.DataFrame:
    """The per-field table with ``z`` (robust z of ``n_nuclei``) and ``flags`` (empty, saturated, out_of_focus).

    Parameters
    ----------
    fields : pandas.DataFrame
        Per-field table with ``n_nuclei`` and, when measured,
        ``saturated_fraction`` and ``focus``.
    empty_min : int, optional
        Fewer nuclei than this is always ``empty``.
    empty_fraction : float, optional
        Below this fraction of the median field count is ``empty``.
    saturated : float, optional
        Above this fraction of pixels at the dtype maximum is ``saturated``.
    focus_fraction : float, optional
        Focus below this fraction of the median (non-empty fields) is ``out_of_focus``.

    Returns
    -------
    pandas.DataFrame
        A copy with ``z`` and ``flags`` (names joined by ``;``, ``""`` when none).
    """
    out = fields.copy()
    n = pd.to_numeric(out["n_nuclei"], errors="coerce")
    median = n.median()
    empty_below = max(empty_min, empty_fraction * median) if not np.isnan(median) else empty_min
    is_empty = n < empty_below
    sat = pd.to_numeric(out.get("saturated_fraction", pd.Series(np.nan, index=out.index)), errors="coerce")
    focus = pd.to_numeric(out.get("focus", pd.Series(np.nan, index=out.index)), errors="coerce")
    median_focus = focus[~is_empty].median()
    is_sat = sat > saturated
    is_blur = ~is_empty & (focus < focus_fraction * median_focus) if median_focus > 0 else is_empty & False
    flags = [[name for name, hit in (("empty", e), ("saturated", s), ("out_of_focus", b)) if hit]
             for e, s, b in zip(is_empty, is_sat, is_blur)]
    out["z"] = robust_z(n)
    out["flags"] = _join(flags)
    return out


def flag_wells(wells: pd.DataFrame, fields: pd.DataFrame | None = None, outlier_z: float = OUTLIER_Z) -> pd.DataFrame:
    """The per-well table with ``z`` (robust z of nuclei per field) and ``flags`` (outlier).

    Parameters
    ----------
    wells : pandas.DataFrame
        Per-well table with ``mean_per_field`` (else ``n_nuclei`` is used).
    fields : pandas.DataFrame, optional
        The flagged field table (:func:`flag_fields`); adds ``flagged_fields``,
        the number of the well's fields with any flag.
    outlier_z : float, optional
        ``|z|`` above this is an ``outlier``.

    Returns
    -------
    pandas.DataFrame
        A copy with ``z``, ``flags`` and, given ``fields``, ``flagged_fields``.
    """
    out = wells.copy()
    per_field = pd.to_numeric(out["mean_per_field"], errors="coerce") if "mean_per_field" in out else out["n_nuclei"]
    out["z"] = robust_z(per_field)
    out["flags"] = _join([["outlier"] if abs(z) > outlier_z else [] for z in out["z"].fillna(0)])
    if fields is not None and "flags" in fields:
        bad = fields[fields["flags"] != ""].groupby("well").size()
        out["flagged_fields"] = out["well"].map(bad).fillna(0).astype(int)
    return out


@dataclass
class EdgeEffect:
    """Outer-ring against inner wells (mean nuclei per field); ``ratio`` is None when a group is empty."""

    outer_wells: int = 0
    inner_wells: int = 0
    outer_mean: float | None = None
    inner_mean: float | None = None
    ratio: float | None = None
    deviation: float | None = None  # ratio - 1
    tolerance: float = EDGE_TOLERANCE
    flagged: bool = False
    note: str = ""

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def edge_effect(wells: pd.DataFrame, rows: list[str], columns: list[str],
                tolerance: float = EDGE_TOLERANCE) -> EdgeEffect:
    """Compare the outer ring of the plate layout ``rows x columns`` (first/last row or column) with the rest.

    Evaporation and temperature gradients act on the rim of a plate, so its
    wells' counts drift against the inner wells.

    Parameters
    ----------
    wells : pandas.DataFrame
        Per-well table with ``row``, ``column`` and ``mean_per_field``.
    rows, columns : list of str
        The plate layout's row and column names, in order.
    tolerance : float, optional
        Flag when ``|outer / inner - 1|`` exceeds it.

    Returns
    -------
    EdgeEffect
        With a ``note`` saying why when it could not be evaluated.
    """
    if wells.empty or not rows or not columns:
        return EdgeEffect(tolerance=tolerance, note="no wells")
    ri = {str(r): i for i, r in enumerate(rows)}
    ci = {str(c): i for i, c in enumerate(columns)}
    r = wells["row"].astype(str).map(ri)
    c = wells["column"].astype(str).map(ci)
    outer = (r == 0) | (r == len(rows) - 1) | (c == 0) | (c == len(columns) - 1)
    per_field = pd.to_numeric(wells["mean_per_field"], errors="coerce")
    eff = EdgeEffect(outer_wells=int(outer.sum()), inner_wells=int((~outer).sum()), tolerance=tolerance)
    if not eff.outer_wells or not eff.inner_wells:
        eff.note = "not evaluated: the plate has no inner wells" if not eff.inner_wells else \
            "not evaluated: no outer wells"
        return eff
    eff.outer_mean = float(per_field[outer].mean())
    eff.inner_mean = float(per_field[~outer].mean())
    if not eff.inner_mean > 0:
        eff.note = "not evaluated: inner wells have no nuclei"
        return eff
    eff.ratio = eff.outer_mean / eff.inner_mean
    eff.deviation = eff.ratio - 1.0
    eff.flagged = bool(abs(eff.deviation) > tolerance)
    eff.note = (f"outer wells {'+' if eff.deviation >= 0 else ''}{100 * eff.deviation:.1f}% against inner wells "
                f"({'edge effect' if eff.flagged else 'within'} +-{100 * tolerance:.0f}%)")
    return eff


@dataclass
class QC:
    """The flagged tables and plate-level QC of one run."""

    fields: pd.DataFrame
    wells: pd.DataFrame
    edge: EdgeEffect = field(default_factory=EdgeEffect)

    def summary(self) -> dict:
        """Counts of each flag and the edge-effect numbers (JSON-ready)."""
        def count(df: pd.DataFrame) -> dict[str, int]:
            names = [f for s in df.get("flags", []) for f in str(s).split(";") if f]
            return {n: names.count(n) for n in sorted(set(names))}

        return {"field_flags": count(self.fields), "well_flags": count(self.wells), "edge_effect": self.edge.as_dict(),
                "thresholds": {"empty_min_nuclei": EMPTY_MIN_NUCLEI, "empty_fraction": EMPTY_FRACTION,
                               "saturated_fraction": SATURATED_FRACTION, "focus_fraction": FOCUS_FRACTION,
                               "outlier_z": OUTLIER_Z, "edge_tolerance": EDGE_TOLERANCE}}


def run_qc(fields: pd.DataFrame, wells: pd.DataFrame, rows: list[str] | None = None,
           columns: list[str] | None = None) -> QC:
    """Flag the fields and wells of a run, with the default thresholds.

    Parameters
    ----------
    fields, wells : pandas.DataFrame
        The run's per-field and per-well tables (:mod:`hts.io.results`).
    rows, columns : list of str, optional
        The plate layout, needed for the edge effect.

    Returns
    -------
    QC
    """
    f = flag_fields(fields)
    w = flag_wells(wells, f)
    edge = edge_effect(w, rows or [], columns or []) if len(w) else EdgeEffect(note="no well layout")
    return QC(f, w, edge)
