"""Screening results of a run with a platemap: per-well readouts, control statistics, B-scores, dose-response, DNA content.

:func:`screen_results` turns a run's tables (``wells.parquet`` and the
readout columns of ``nuclei.parquet``) and a platemap into one JSON-able
record; :func:`write_screen` writes it as ``<name>.hts/screen.json`` and the
per-well statistics as ``screen.csv`` (one row per well, ready for a hit list
in pandas). The statistics themselves are :mod:`hts.analysis.screen_stats`.

Readouts: ``n_nuclei`` (nuclei per well, summed over its fields) always,
then each ``--readout FEATURE``: the per-well median of a per-nucleus
column of ``nuclei.parquet`` (e.g. ``Nuclei_Intensity_MeanIntensity_GFP``),
the aggregation pycytominer uses by default.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hts.analysis.count import plate_matrix, table_layout
from hts.analysis.platemap import controls, join_platemap, well_id
from hts.analysis.qc import robust_z
from hts.analysis.screen_stats import b_score, dna_content, fit_four_pl, percent_of_control, ssmd, z_prime
from hts.errors import HtsError
from hts.io.atomic import atomic_write

COUNT = "n_nuclei"
MIN_DOSES = 2  # a treatment with at least this many distinct doses gets a dose-response fit


def nucleus_feature(measured: Sequence[tuple[int, str]], channel: int) -> str | None:
    """The background-corrected integrated-intensity column of the nucleus channel (the DNA stain), or None.

    Parameters
    ----------
    measured : sequence of (int, str)
        The measured channels, ``(index, column-safe name)``.
    channel : int
        The nucleus channel's index.
    """
    name = dict(measured).get(channel)
    return f"Nuclei_Intensity_IntegratedIntensityAboveBackground_{name}" if name else None


def _nuclei_columns(results: Path, columns: list[str]) -> pd.DataFrame:
    """Columns of ``nuclei.parquet`` (with ``well``), read column by column; a missing column is one clear error."""
    path = results / "nuclei.parquet"
    if not path.is_file():
        return pd.DataFrame(columns=["well", *columns])
    have = pq.read_schema(path).names
    for c in columns:
        if c not in have:
            close = difflib.get_close_matches(c, [h for h in have if h.startswith(("Nuclei_", "Cytoplasm_"))], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else \
                "; the features are the Nuclei_* and Cytoplasm_* columns of nuclei.parquet"
            raise HtsError(f"--readout {c}: no such column in {path}{hint}")
    return pd.read_parquet(path, columns=["well", *columns])


def well_readouts(results: str | Path, readouts: Sequence[str] = ()) -> pd.DataFrame:
    """One row per well: ``well`` (``B/3``), ``Metadata_Well`` (``B03``), row, column, ``n_nuclei`` and each readout's median.

    Parameters
    ----------
    results : str or Path
        The run's results folder (``<name>.hts``).
    readouts : sequence of str
        ``nuclei.parquet`` columns.

    Returns
    -------
    pandas.DataFrame
        Wells in plate order; a readout is NaN in a well without nuclei.
    """
    results = Path(results)
    wells = pd.read_parquet(results / "wells.parquet", columns=["well", "row", "column", COUNT])
    wells.insert(1, "Metadata_Well", [well_id(r, c) for r, c in zip(wells["row"], wells["column"])])
    if readouts:
        medians = _nuclei_columns(results, list(readouts)).groupby("well")[list(readouts)].median()
        wells = wells.join(medians, on="well")
    return wells


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _dose_responses(table: pd.DataFrame, readouts: list[str]) -> list[dict]:
    """A four-parameter logistic fit per treatment (>= MIN_DOSES doses, dose > 0) and readout."""
    if "Metadata_treatment" not in table or "Metadata_dose" not in table:
        return []
    out = []
    dosed = table[pd.to_numeric(table["Metadata_dose"], errors="coerce") > 0]
    for treatment, part in dosed.groupby("Metadata_treatment", sort=False):
        dose = pd.to_numeric(part["Metadata_dose"]).to_numpy(float)
        if np.unique(dose).size < MIN_DOSES:
            continue
        for readout in readouts:
            response = part[readout].to_numpy(float)
            fit = fit_four_pl(dose, response)
            out.append({"treatment": str(treatment), "readout": readout, "bottom": _finite(fit.bottom),
                        "top": _finite(fit.top), "ec50": _finite(fit.ec50), "hill": _finite(fit.hill),
                        "ec50_ci": [_finite(v) for v in fit.ec50_ci], "hill_ci": [_finite(v) for v in fit.hill_ci],
                        "n": fit.n, "converged": bool(fit.converged), "message": fit.message,
                        "dose": dose.tolist(), "response": [_finite(v) for v in response]})
    return out


def _dna(results: Path, feature: str | None, wells: pd.DataFrame, negative: list[str]) -> dict | None:
    """G1, S and G2/M fractions per well from the nucleus channel's integrated intensity.

    The G1 peak of the pooled negative-control wells (all wells without
    controls) is the reference each well's own G1 peak is looked for near,
    so a well arrested in G2/M does not take its G2 peak for G1.
    """
    if feature is None:
        return None
    nuclei = _nuclei_columns(results, [feature])
    ids = dict(zip(wells["well"], wells["Metadata_Well"]))
    controls = nuclei[nuclei["well"].map(ids).isin(negative)] if negative else nuclei
    reference = dna_content(controls[feature].to_numpy(float)).g1_peak if len(controls) else None
    per_well = []
    for well, values in nuclei.groupby("well", sort=False)[feature]:
        d = dna_content(values.to_numpy(float), reference=reference)
        per_well.append({"well": well, "n": d.n, "g1_peak": _finite(d.g1_peak), "g1_fraction": _finite(d.g1_fraction),
                         "s_fraction": _finite(d.s_fraction), "g2m_fraction": _finite(d.g2m_fraction),
                         "edges": [float(e) for e in d.edges], "counts": [int(c) for c in d.counts]})
    order = {w: i for i, w in enumerate(wells["well"])}
    return {"feature": feature, "reference_g1_peak": _finite(reference) if reference is not None else None,
            "wells": sorted(per_well, key=lambda w: order.get(w["well"], len(order)))}


def screen_results(results: str | Path, platemap: pd.DataFrame, readouts: Sequence[str] = (),
                   dna_feature: str | None = None) -> tuple[dict, pd.DataFrame]:
    """The screening statistics of one plate.

    For each readout (``n_nuclei`` first): Z' and SSMD of the positive
    against the negative control wells (platemap ``role``), the negative
    controls' mean; per well the percent of the negative-control mean, the
    robust z against the plate's sample wells (their median and 1.4826 MAD,
    :func:`hts.analysis.qc.robust_z`; all wells when fewer than 3 are samples) and the
    B-score of the plate (two-way median polish over rows and columns).
    Every treatment with at least two doses gets a four-parameter logistic
    fit per readout, and with ``dna_feature`` each well its cell-cycle phase
    fractions (:func:`hts.analysis.screen_stats.dna_content`).

    Parameters
    ----------
    results : str or Path
        The run's results folder.
    platemap : pandas.DataFrame
        A :func:`hts.analysis.platemap.read_platemap` table.
    readouts : sequence of str
        Per-nucleus features scored by their per-well median.
    dna_feature : str, optional
        The DNA stain's integrated-intensity column.

    Returns
    -------
    record : dict
        JSON-able: ``plate`` layout, ``controls``, ``readouts`` (per readout
        ``z_prime``, ``ssmd``, ``negative_mean``, ``positive_mean``),
        ``dose_response`` (fits with their points), ``dna_content``.
    wells : pandas.DataFrame
        One row per well: the readouts, ``<readout>_percent_of_control``,
        ``_robust_z``, ``_b_score`` and the platemap's ``Metadata_*`` columns.
    """
    results = Path(results)
    readouts = [COUNT, *[r for r in dict.fromkeys(readouts) if r != COUNT]]
    table = join_platemap(well_readouts(results, readouts[1:]), platemap, "Metadata_Well")
    roles = controls(platemap)
    role = table["Metadata_role"] if "Metadata_role" in table else pd.Series("sample", index=table.index)
    is_role = {r: (role == r).to_numpy() for r in ("negative", "positive", "sample")}
    rows, cols = table_layout(table)
    summary = {}
    for readout in readouts:
        v = pd.to_numeric(table[readout], errors="coerce")
        neg, pos, samples = v[is_role["negative"]], v[is_role["positive"]], v[is_role["sample"]]
        neg_mean = float(neg.mean()) if neg.notna().any() else float("nan")
        summary[readout] = {"z_prime": _finite(z_prime(pos, neg)), "ssmd": _finite(ssmd(pos, neg)),
                            "negative_mean": _finite(neg_mean),
                            "positive_mean": _finite(float(pos.mean()) if pos.notna().any() else float("nan")),
                            "n_negative": int(neg.notna().sum()), "n_positive": int(pos.notna().sum())}
        table[f"{readout}_percent_of_control"] = percent_of_control(v.to_numpy(float), neg_mean) \
            if math.isfinite(neg_mean) and neg_mean != 0 else np.nan
        reference = samples if samples.notna().sum() >= 3 else v
        table[f"{readout}_robust_z"] = robust_z(v, reference)
        scores = b_score(plate_matrix(table.assign(_v=v), rows, cols, "_v"))
        table[f"{readout}_b_score"] = [scores[rows.index(r), cols.index(c)] for r, c in zip(table["row"], table["column"])]
    record = {"plate": {"rows": rows, "columns": cols}, "controls": roles, "readouts": summary,
              "dose_response": _dose_responses(table, readouts), "dna_content": _dna(results, dna_feature, table, roles["negative"])}
    return record, table


def write_screen(results: str | Path, platemap: pd.DataFrame, readouts: Sequence[str] = (),
                 dna_feature: str | None = None, log=print) -> dict:
    """Compute :func:`screen_results` and write ``screen.json`` and ``screen.csv`` (atomically) into ``results``.

    Parameters
    ----------
    results : str or Path
        The run's results folder.
    platemap : pandas.DataFrame
        The platemap (its controls give Z' and percent of control).
    readouts : sequence of str
        Per-nucleus features scored by their per-well median.
    dna_feature : str, optional
        The DNA stain's integrated-intensity column (DNA content per well).
    log : callable
        One line per notable event (no controls, a fit that did not converge).

    Returns
    -------
    dict
        The record written to ``screen.json``.
    """
    results = Path(results)
    record, wells = screen_results(results, platemap, readouts, dna_feature)
    if not record["controls"]["negative"] or not record["controls"]["positive"]:
        log(f"warning: {platemap.attrs.get('path', 'the platemap')}: no role column with negative and positive "
            "wells; Z' and SSMD are not computed")
    for fit in record["dose_response"]:
        if not fit["converged"]:
            log(f"warning: dose-response of {fit['treatment']} on {fit['readout']}: {fit['message']}")
    atomic_write(results / "screen.json", json.dumps(record, indent=1, allow_nan=False).encode())
    atomic_write(results / "screen.csv", wells.to_csv(index=False).encode())
    return record
