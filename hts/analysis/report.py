"""``hts report``: an HTML report of a run (plate heatmaps, histograms, a thumbnail gallery, QC, run metadata).

Writes into ``<name>.hts/report/`` (or ``out_dir``): ``index.html``, the PNGs
it shows (by relative path: the folder can be moved or zipped as a whole),
``report.json`` (the exact matrices drawn, for tests and scripts) and the QC
tables ``qc_fields.csv`` and ``qc_wells.csv`` (:mod:`hts.analysis.qc`). Plates are
drawn as the physical plate (rows x columns of the plate metadata: 96, 384 and
1536 wells alike; absent wells blank); single images (whole slides) get a
nucleus density map instead. Plots use matplotlib's Agg canvas (no display,
no pyplot state).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hts.analysis.count import plate_matrix
from hts.analysis.figures import df_table, figure_html, flat, heatmap, histogram, json_matrix, save, table
from hts.analysis.load import PlateResults, open_results
from hts.analysis.report_growth import growth_section
from hts.analysis.report_screen import screen_record, screen_section
from hts.errors import HtsError

GALLERY_SIZE = 6  # thumbnails: flagged fields first, then the lowest and highest counts
THUMB_SIDE = 512  # px: thumbnails read the coarsest pyramid level still at least this large
HEATMAPS = (("n_nuclei", "nuclei per well", "viridis"), ("mean_area", "mean nuclear area (px)", "magma"),
            ("mean_intensity", "mean nuclear intensity", "cividis"))


def _density(res: PlateResults, path: Path) -> tuple[str, dict]:
    """2D histogram of the nucleus centroids over the whole image."""
    try:
        h, w = res.labels(None, None).shape
    except (HtsError, OSError, KeyError):  # output Zarr gone: the extent of the nuclei
        h, w = (int(res.nuclei[c].max()) + 1 if len(res.nuclei) else 1 for c in ("centroid_y", "centroid_x"))
    bin_px = max(1, math.ceil(max(h, w) / 64))
    ye, xe = np.arange(0, h + bin_px, bin_px), np.arange(0, w + bin_px, bin_px)
    counts, _, _ = np.histogram2d(res.nuclei.get("centroid_y", []), res.nuclei.get("centroid_x", []), bins=(ye, xe))
    fig = Figure(figsize=(6, 6 * h / w + 0.5))
    ax = fig.add_subplot()
    im = ax.imshow(counts, cmap="viridis", extent=(0, xe[-1], ye[-1], 0), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"nuclei per {bin_px}x{bin_px} px")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(f"nucleus density ({len(res.nuclei)} nuclei)", fontsize=10)
    return save(fig, path), {"bin_px": bin_px, "shape": [h, w], "values": counts.astype(int).tolist()}


def _pick_fields(fields: pd.DataFrame, n: int = GALLERY_SIZE) -> pd.DataFrame:
    """Flagged fields first, then alternately the lowest and highest counts, up to ``n``."""
    order = fields.sort_values("n_nuclei", kind="stable")
    lows, highs = list(order.index), list(order.index[::-1])
    picks = list(fields.index[fields["flags"] != ""])[: max(n - 2, 1)]
    for pair in zip(lows, highs):
        for i in pair:
            if i not in picks and len(picks) < n:
                picks.append(i)
    return fields.loc[picks]


def _thumbnail(res: PlateResults, row: pd.Series, path: Path) -> str:
    from skimage.segmentation import find_boundaries

    well = row["well"] or None
    image, labels = res.plane(well, row["field"] if well else None, max_side=THUMB_SIDE)
    lo, hi = np.percentile(image, (1, 99.8)) if image.size else (0, 1)
    gray = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[find_boundaries(labels, mode="inner")] = (1.0, 0.85, 0.0)
    fig = Figure(figsize=(3.2, 3.2 * image.shape[0] / max(image.shape[1], 1) + 0.4))
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    name = f"{row['well']} f{row['field']}" if well else "image"
    flags = f" [{row['flags'].replace(';', ', ')}]" if row["flags"] else ""
    ax.set_title(f"{name}: {int(row['n_nuclei'])} nuclei{flags}", fontsize=8, color="red" if flags else "black")
    return save(fig, path)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}h1{font-size:1.5em}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.5em}figure{display:inline-block;margin:.5em;
vertical-align:top}figcaption{font-size:.8em;color:#555;max-width:480px}img{max-width:100%}table{border-collapse:
collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
th{background:#f4f4f4}.flag{color:#b00;font-weight:bold}.pair{display:flex;flex-wrap:wrap}"""
SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});"""


def write_report(path: str | os.PathLike, out_dir: str | os.PathLike | None = None, platemap: str | None = None,
                 readouts: list[str] | None = None) -> Path:
    """Write the HTML report of a run, with its PNGs, ``report.json`` and the QC tables.

    A plate run with a platemap (the run's, or ``platemap``) also gets the
    screen section (:mod:`hts.analysis.report_screen`).

    Parameters
    ----------
    path : str or os.PathLike
        The run's output Zarr or its ``.hts`` folder.
    out_dir : str or os.PathLike, optional
        Where to write; default ``<name>.hts/report/``.
    platemap : str, optional
        A platemap CSV: ``screen.json`` is recomputed with it.
    readouts : list of str, optional
        Per-nucleus features scored per well (default the run's ``--readout``).

    Returns
    -------
    pathlib.Path
        The ``index.html`` written.

    Raises
    ------
    HtsError
        When ``path`` holds no run results.
    """
    from hts.analysis.qc import EMPTY_FRACTION, EMPTY_MIN_NUCLEI

    res = open_results(path)
    out = Path(out_dir) if out_dir else res.folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    fields, wells, rec = res.fields, res.wells, res.record
    fields.to_csv(out / "qc_fields.csv", index=False)
    wells.to_csv(out / "qc_wells.csv", index=False)
    data: dict = {"kind": res.kind, "rows": res.rows, "columns": res.columns, "heatmaps": {}, "density": None,
                  "gallery": [], "qc": res.qc.summary(), "summary": rec.get("summary", {})}
    plots: list[str] = []
    if res.kind == "plate" and res.rows and res.columns:
        outliers = plate_matrix(wells.assign(o=wells["flags"].str.contains("outlier").astype(float)), res.rows,
                                res.columns, "o") > 0
        flagged = plate_matrix(wells.assign(o=wells.get("flagged_fields", 0)), res.rows, res.columns, "o") > 0
        for col, title, cmap in HEATMAPS:
            m = plate_matrix(wells, res.rows, res.columns, col)
            data["heatmaps"][col] = json_matrix(m)
            png = heatmap(m, res.rows, res.columns, title, cmap, out / f"plate_{col}.png",
                           outliers if col == "n_nuclei" else None, flagged if col == "n_nuclei" else None)
            plots.append(figure_html(png, f"{title}, laid out as the plate ({len(res.rows)} x {len(res.columns)}; "
                                 "blank: no well)" + ("; red box: outlier well (|z| > 3), dashed orange: well with "
                                                      "flagged fields" if col == "n_nuclei" else "")))
    else:
        png, data["density"] = _density(res, out / "density.png")
        plots.append(figure_html(png, "nucleus density: a 2D histogram of the nucleus centroids"))
        for col, label in (("area", "nuclear area (px)"), ("mean_intensity", "mean nuclear intensity")):
            vals = res.nuclei[col].to_numpy(float) if col in res.nuclei else np.array([])
            png, data[f"{col}_histogram"] = histogram(vals, f"{label} per nucleus", label, out / f"hist_{col}.png")
            plots.append(figure_html(png, f"histogram of {label}"))
    counts = pd.to_numeric(fields["n_nuclei"]).to_numpy(float)
    median = float(np.nanmedian(counts)) if len(counts) else 0.0
    empty_below = max(EMPTY_MIN_NUCLEI, EMPTY_FRACTION * median)
    png, data["histogram"] = histogram(counts, "nuclei per field", "nuclei", out / "hist_fields.png", empty_below,
                                   ylabel="fields")
    plots.append(figure_html(png, f"nuclei per field ({len(counts)} fields); dashed: the 'empty' threshold"))
    if res.kind == "plate" and res.rows and res.columns:
        record, screen_wells = screen_record(res, platemap, readouts)
        if record is not None:
            section, data["screen"] = screen_section(res, out, record, screen_wells)
            plots += section
    elif platemap is not None:
        raise HtsError(f"--platemap {platemap}: {path} is a single image, not a plate")
    if "t" in fields and fields["t"].notna().any():
        section, data["growth"] = growth_section(res, out)
        plots += section
    gallery = []
    for i, (_, row) in enumerate(_pick_fields(fields).iterrows()):
        entry = {k: row[k] for k in ("well", "field", "path", "flags")} | {"n_nuclei": int(row["n_nuclei"])}
        try:
            entry["png"] = _thumbnail(res, row, out / f"field_{i}.png")
            gallery.append(figure_html(entry["png"], f"{row['path'] or 'image'}: labels outlined in yellow"))
        except Exception as exc:  # noqa: BLE001 (e.g. the output Zarr moved: the report still renders)
            entry["error"] = f"{type(exc).__name__}: {exc}"
            where = html.escape(row["path"] or "image")
            gallery.append(f"<p>{where}: no thumbnail ({html.escape(entry['error'])})</p>")
        data["gallery"].append(entry)
    data["images"] = re.findall(r'<img src="([^"]+)"', "".join(plots + gallery))
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    index = out / "index.html"
    index.write_text(_html(res, plots, gallery, data))
    return index


def _html(res: PlateResults, plots: list[str], gallery: list[str], data: dict) -> str:
    rec, s, e = res.record, res.record.get("summary", {}), html.escape
    model = rec.get("model", {})
    edge, qc = res.qc.edge, data["qc"]
    flagged_f = res.fields[res.fields["flags"] != ""]
    flagged_w = res.wells[res.wells["flags"] != ""] if "flags" in res.wells else res.wells.iloc[:0]
    edge_rows = [("outer wells", edge.outer_wells), ("inner wells", edge.inner_wells),
                 ("outer mean nuclei/field", None if edge.outer_mean is None else f"{edge.outer_mean:.2f}"),
                 ("inner mean nuclei/field", None if edge.inner_mean is None else f"{edge.inner_mean:.2f}"),
                 ("ratio outer/inner", None if edge.ratio is None else f"{edge.ratio:.3f}"),
                 (f"flagged (|ratio - 1| > {edge.tolerance:.0%})", edge.flagged), ("", edge.note)]
    failed = list((s.get("failed") or {}).items())
    title = f"hts report: {res.zarr or res.folder}"
    parts = [
        (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
         f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"),
        f"<h1>{e(title)}</h1>",
        table([("input", rec.get("input")), ("output", rec.get("output")),
                ("kind", f"{res.kind} (NGFF {rec.get('ngff')})"),
                ("fields done", f"{s.get('done')}/{s.get('fields')}"), ("nuclei", s.get("n_nuclei")),
                ("fields failed", len(failed)), ("fields flagged", len(flagged_f)), ("finished", rec.get("finished"))]),
        "<h2>Plate</h2>" if res.kind == "plate" else "<h2>Image</h2>", *plots,
        "<h2>Fields</h2>", *gallery,
        "<h2>Quality control</h2>",
        "<p>Field flags: <b>empty</b> (fewer nuclei than max({empty_min_nuclei}, {empty_fraction:.0%} of the median "
        "field)), <b>saturated</b> (more than {saturated_fraction:.0%} of pixels at the maximum), <b>out_of_focus</b> "
        "(focus = var(Laplacian)/mean&sup2; below {focus_fraction:.0%} of the median field's). Well flag "
        "<b>outlier</b>: robust z of nuclei per field (median/MAD) beyond &plusmn;{outlier_z:g}.</p>".format(
            **qc["thresholds"]),
        f"<h3>Flagged fields ({len(flagged_f)})</h3>",
        df_table(flagged_f, ["well", "field", "n_nuclei", "saturated_fraction", "focus", "z", "flags"]),
        f"<h3>Flagged wells ({len(flagged_w)})</h3>",
        df_table(flagged_w, ["well", "fields", "n_nuclei", "mean_per_field", "z", "flags"]),
        f"<h3>Edge effect{' <span class=flag>(flagged)</span>' if edge.flagged else ''}</h3>", table(edge_rows),
        ("<p>Tables with the QC columns: <a href='qc_fields.csv'>qc_fields.csv</a>, "
         "<a href='qc_wells.csv'>qc_wells.csv</a>; the matrices drawn: <a href='report.json'>report.json</a>.</p>"),
        "<h2>Run</h2>",
        table([("model", model.get("path")), ("sha256", model.get("sha256")), ("host", rec.get("host")),
                ("wall time (s)", f"{s.get('wall_s', 0):.1f}")]),
        "<h3>Options</h3>", table(flat(rec.get("options", {})), ("option", "value")),
        "<h3>Software versions</h3>", table(list(rec.get("versions", {}).items()), ("package", "version")),
        f"<h3>Failed fields ({len(failed)})</h3>", table(failed, ("field", "reason")) if failed else "<p>none</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
