"""The screening section of the report: control statistics, raw and B-score heatmaps, dose-response fits, DNA content.

Drawn from ``screen.json`` (:mod:`hts.analysis.screen`), recomputed first when
``hts report --platemap`` (or ``--readout``) asks for other settings than
the run's.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hts.analysis.count import plate_matrix
from hts.analysis.figures import figure_html, heatmap, json_matrix, save, table
from hts.analysis.load import PlateResults
from hts.analysis.platemap import read_platemap
from hts.analysis.screen import COUNT, write_screen
from hts.analysis.screen_stats import G1_GATE, G2M_GATE, S_GATE, four_pl

MAX_DNA_WELLS = 96  # DNA-content small multiples drawn (plate order); more wells: the G2/M heatmap only
HITS = 10  # sample wells listed per readout, by |robust z|


def screen_record(res: PlateResults, platemap: str | None = None, readouts: list[str] | None = None,
                  log=print) -> tuple[dict | None, pd.DataFrame | None]:
    """The run's screen record and per-well statistics, recomputed when a platemap or readouts are given.

    Parameters
    ----------
    res : PlateResults
        The run.
    platemap : str, optional
        A platemap CSV (``hts report --platemap``); default the run's copy (``platemap.csv``).
    readouts : list of str, optional
        Per-nucleus features (``--readout``); default the run's.
    log : callable
        Warnings.

    Returns
    -------
    record, wells
        ``screen.json``'s content and ``screen.csv`` as a table; (None, None)
        when the run has no platemap and none is given.
    """
    folder = res.folder
    run_options = res.record.get("options", {})
    if platemap is None and readouts is None and (folder / "screen.json").is_file():
        return json.loads((folder / "screen.json").read_text()), pd.read_csv(folder / "screen.csv")
    path = platemap or (str(folder / "platemap.csv") if (folder / "platemap.csv").is_file() else None)
    if path is None:
        return None, None
    settings = json.loads((folder / "settings.json").read_text()) if (folder / "settings.json").is_file() else {}
    record = write_screen(folder, read_platemap(path), readouts if readouts is not None else
                          run_options.get("readout") or (), settings.get("dna_feature"), log)
    return record, pd.read_csv(folder / "screen.csv")


def _dose_plot(fit: dict, path: Path) -> str:
    fig = Figure(figsize=(4.2, 3.2))
    ax = fig.add_subplot()
    dose, response = np.asarray(fit["dose"], float), np.asarray([np.nan if v is None else v for v in fit["response"]])
    ax.scatter(dose, response, s=14, color="#4c72b0", zorder=3)
    if fit["converged"]:
        grid = np.geomspace(dose.min(), dose.max(), 200)
        ax.plot(grid, four_pl(grid, fit["bottom"], fit["top"], fit["ec50"], fit["hill"]), color="#dd8452")
        ax.axvline(fit["ec50"], color="#999", linestyle="--", linewidth=1)
        lo, hi = (f"{v:.3g}" if v is not None else "?" for v in fit["ec50_ci"])
        title = f"{fit['treatment']}: EC50 {fit['ec50']:.3g} [{lo}, {hi}], hill {fit['hill']:.2f}"
    else:
        title = f"{fit['treatment']}: no fit ({fit['message']})"
    ax.set_xscale("log")
    ax.set_xlabel("dose")
    ax.set_ylabel(fit["readout"] if len(fit["readout"]) < 30 else fit["readout"][:27] + "...", fontsize=8)
    ax.set_title(title, fontsize=8)
    return save(fig, path)


def _dna_plot(dna: dict, path: Path) -> str:
    wells = dna["wells"][:MAX_DNA_WELLS]
    n = len(wells)
    cols = min(12, max(n, 1))
    rows = -(-n // cols)
    fig = Figure(figsize=(cols * 1.3 + 0.5, rows * 1.0 + 0.6))
    for i, w in enumerate(wells):
        ax = fig.add_subplot(rows, cols, i + 1)
        if w["counts"]:  # 30 bins over r in [0, 3]: a well has hundreds of nuclei, not thousands
            edges = np.asarray(w["edges"], float)
            counts, bins = np.histogram((edges[:-1] + edges[1:]) / 2, bins=np.linspace(0, 3, 31), weights=w["counts"])
            ax.stairs(counts, bins, fill=True, color="#55a868")
        ax.set_xlim(0, 3)
        ax.set_xticks([1, 2])
        ax.set_yticks([])
        ax.tick_params(labelsize=5)
        g1, g2 = w["g1_fraction"], w["g2m_fraction"]
        ax.set_title(f"{w['well']} G1 {g1:.0%} G2/M {g2:.0%}" if g1 is not None and g2 is not None else w["well"],
                     fontsize=5)
    fig.subplots_adjust(top=1 - 0.5 / (rows * 1.0 + 0.6), hspace=0.6)
    fig.suptitle(f"DNA content ({dna['feature']} / G1 peak) per well", fontsize=8)
    return save(fig, path)


def screen_section(res: PlateResults, out: Path, record: dict, wells: pd.DataFrame) -> tuple[list[str], dict]:
    """HTML and JSON of the screen section.

    Parameters
    ----------
    res : PlateResults
        The run (its plate layout).
    out : Path
        The report folder (PNGs are written there).
    record, wells : dict, pandas.DataFrame
        From :func:`screen_record`.

    Returns
    -------
    html_parts : list of str
        The section, to be joined into the page.
    data : dict
        What was drawn, for ``report.json``: the raw and B-score matrices per readout.
    """
    e = html.escape
    parts = ["<h2>Screen</h2>", "<p>Controls from the platemap's <code>role</code> column; Z' = 1 - 3 (sd<sub>pos</sub> "
             "+ sd<sub>neg</sub>) / |mean<sub>pos</sub> - mean<sub>neg</sub>|, SSMD = (mean<sub>pos</sub> - "
             "mean<sub>neg</sub>) / sqrt(sd<sub>pos</sub>&sup2; + sd<sub>neg</sub>&sup2;). B-score: residual of a "
             "two-way median polish over rows and columns, divided by 1.4826 MAD. All per well: "
             "<a href='../screen.csv'>screen.csv</a>, <a href='../screen.json'>screen.json</a>.</p>"]
    rows = [(r, s["z_prime"], s["ssmd"], s["negative_mean"], s["positive_mean"], s["n_negative"], s["n_positive"])
            for r, s in record["readouts"].items()]
    fmt = [tuple(f"{v:.3g}" if isinstance(v, float) else v for v in r) for r in rows]
    parts.append(table(fmt, ("readout", "Z'", "SSMD", "negative mean", "positive mean", "negative wells",
                             "positive wells")))
    data: dict = {"heatmaps": {}, "dose_response": [], "dna": None}
    layout = (res.rows, res.columns)
    for i, readout in enumerate(record["readouts"]):
        raw = plate_matrix(wells, *layout, readout)
        bs = plate_matrix(wells, *layout, f"{readout}_b_score")
        data["heatmaps"][readout] = {"raw": json_matrix(raw), "b_score": json_matrix(bs)}
        label = "nuclei per well" if readout == COUNT else f"median {readout}"
        pngs = (heatmap(raw, *layout, label, "viridis", out / f"screen_{i}_raw.png"),
                heatmap(bs, *layout, f"B-score of {label}", "coolwarm", out / f"screen_{i}_bscore.png",
                        fmt=".1f"))
        parts += [f"<h3>{e(label)}</h3>", "<div class='pair'>",
                  figure_html(pngs[0], f"{label}, raw"),
                  figure_html(pngs[1], f"B-score of {label}: row and column effects removed"), "</div>"]
        hits = wells[wells.get("Metadata_role", pd.Series("sample", index=wells.index)).fillna("sample") == "sample"]
        hits = hits.reindex(hits[f"{readout}_robust_z"].abs().sort_values(ascending=False).index).head(HITS)
        cols = [c for c in ("Metadata_Well", "Metadata_treatment", "Metadata_dose", readout,
                            f"{readout}_percent_of_control", f"{readout}_robust_z", f"{readout}_b_score") if c in hits]
        parts += [f"<p>Sample wells with the largest |robust z| of {e(label)}:</p>",
                  table([tuple(f"{v:.3g}" if isinstance(v, float) else v for v in r)
                         for r in hits[cols].itertuples(index=False)], tuple(cols))]
    fits = record["dose_response"]
    if fits:
        parts.append("<h3>Dose-response (four-parameter logistic, 95% CI of the EC50)</h3>")
        for i, fit in enumerate(fits):
            parts.append(figure_html(_dose_plot(fit, out / f"dose_{i}.png"),
                                     f"{fit['treatment']} on {fit['readout']} ({fit['n']} wells)"))
            data["dose_response"].append({k: fit[k] for k in ("treatment", "readout", "ec50", "hill", "converged")})
    dna = record.get("dna_content")
    if dna and dna["wells"]:
        g2 = plate_matrix(pd.DataFrame([{"row": w["well"].split("/")[0], "column": w["well"].split("/")[-1],
                                         "v": w["g2m_fraction"]} for w in dna["wells"]]), *layout, "v")
        gates = ", ".join(f"{name} [{lo:g}, {hi:g})" for name, (lo, hi) in
                          (("G1", G1_GATE), ("S", S_GATE), ("G2/M", G2M_GATE)))
        parts += ["<h3>DNA content</h3>", f"<p>Integrated nuclear intensity of the DNA stain over the G1 peak: {gates}.</p>",
                  figure_html(heatmap(g2 * 100, *layout, "G2/M nuclei (%)", "magma", out / "dna_g2m.png"),
                              "percent of nuclei in G2/M per well"),
                  figure_html(_dna_plot(dna, out / "dna_wells.png"),
                              f"DNA-content histograms, first {min(len(dna['wells']), MAX_DNA_WELLS)} wells")]
        data["dna"] = {"feature": dna["feature"], "g2m": json_matrix(g2)}
    return parts, data
