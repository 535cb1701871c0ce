"""The time-series section of the report: per-well growth curves and doubling times (``hts run --t``).

Nuclei per well at each time point (summed over the well's fields), one line
per well, coloured by the platemap's treatment when the run has one; the
doubling time of each well from a log-linear fit (:mod:`hts.analysis.growth`).
Time is in the unit of the image's ``t`` axis (its ``scale`` and ``unit``), or
in time points when the image does not say.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from hts.analysis.figures import df_table, figure_html, save
from hts.analysis.growth import growth_table
from hts.analysis.load import PlateResults


def time_axis(res: PlateResults) -> tuple[float, str]:
    """The time step and unit of the run's images (``t`` axis ``scale`` and ``unit``); (1, "time point") if unknown."""
    try:
        from hts.io.ngff_image import image_info

        path = str(res.fields["path"].iloc[0])
        info = image_info(res._group(path), path)
        unit = next((a.get("unit") for a in info.axis_meta if a["name"].lower() == "t"), None)
        return float(info.axis_scale("t", 0)), str(unit or "time point")
    except Exception:  # noqa: BLE001  # output moved, no t axis metadata: time points
        return 1.0, "time point"


def per_well_time(fields: pd.DataFrame, step: float) -> pd.DataFrame:
    """``well``, ``t`` (index), ``time`` (``t * step``) and ``n_nuclei`` summed over each well's fields."""
    out = fields.groupby(["well", "t"], sort=False)["n_nuclei"].sum().reset_index()
    out["t"] = out["t"].astype(int)
    out["time"] = out["t"] * step
    return out.sort_values(["well", "t"], kind="stable").reset_index(drop=True)


def growth_section(res: PlateResults, out) -> tuple[list[str], dict]:
    """HTML and JSON of the growth section of a time-series run.

    Parameters
    ----------
    res : PlateResults
        The run (its fields table has a ``t`` column).
    out : pathlib.Path
        The report folder.

    Returns
    -------
    html_parts : list of str
    data : dict
        ``unit``, ``curves`` (well -> [time, n_nuclei] pairs) and ``doubling`` (the growth table's records).
    """
    step, unit = time_axis(res)
    counts = per_well_time(res.fields, step)
    growth = growth_table(counts.assign(t=counts["time"]))
    treatment = {}
    if "Metadata_treatment" in res.fields:
        treatment = dict(zip(res.fields["well"], res.fields["Metadata_treatment"].astype(str)))
    groups = sorted(set(treatment.values())) if treatment else []
    cmap = colormaps["tab10"]
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for well, part in counts.groupby("well", sort=False):
        g = treatment.get(well)
        color = cmap(groups.index(g) % 10) if g in groups else None
        ax.plot(part["time"], part["n_nuclei"], marker="o", markersize=3, linewidth=1, color=color,
                label=g if g in groups else well)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if len(unique) <= 12:
        ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=2)
    ax.set_yscale("log")
    ax.set_xlabel(unit)
    ax.set_ylabel("nuclei per well")
    ax.set_title("growth curves (one line per well)", fontsize=10)
    png = save(fig, out / "growth.png")
    shown = growth.assign(doubling_time=growth["doubling_time"].replace([np.inf], np.nan))
    parts = ["<h2>Time series</h2>",
             figure_html(png, f"nuclei per well over time ({unit}), log scale"
                              + ("; colour: platemap treatment" if groups else "")),
             f"<p>Doubling time per well ({html.escape(unit)}): least-squares fit of log2(nuclei) against time; "
             "95% confidence interval from the slope's.</p>",
             df_table(shown, ["well", "n_timepoints", "first", "last", "doubling_time", "doubling_time_lo",
                              "doubling_time_hi", "r2", "ok"])]
    data = {"unit": unit, "curves": {w: part[["time", "n_nuclei"]].to_numpy().tolist()
                                     for w, part in counts.groupby("well", sort=False)},
            "doubling": growth.replace([np.inf, -np.inf], np.nan).astype(object).where(growth.notna(), None)
            .to_dict("records")}
    return parts, data
