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
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hts.analysis.load import PlateResults, open_results
from hts.errors import HtsError

GALLERY_SIZE = 6  # thumbnails: flagged fields first, then the lowest and highest counts
THUMB_SIDE = 512  # px: thumbnails read the coarsest pyramid level still at least this large
HEATMAPS = (("n_nuclei", "nuclei per well", "viridis"), ("mean_area", "mean nuclear area (px)", "magma"),
            ("mean_intensity", "mean nuclear intensity", "cividis"))


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


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path.name


def _heatmap(m: np.ndarray, rows: list[str], columns: list[str], title: str, cmap: str, path: Path,
             outliers: np.ndarray | None = None, flagged: np.ndarray | None = None) -> str:
    nr, nc = m.shape
    cell = min(0.5, 14.0 / max(nc, 1))
    fig = Figure(figsize=(max(3.5, nc * cell + 1.8), max(2.0, nr * cell + 0.9)))
    ax = fig.add_subplot()
    cm = colormaps[cmap].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, aspect="equal", interpolation="nearest")
    fs = 8 if nc <= 12 else 6 if nc <= 24 else 4
    ax.set_xticks(range(nc), columns, fontsize=fs)
    ax.set_yticks(range(nr), rows, fontsize=fs)
    ax.xaxis.tick_top()
    ax.set_xticks(np.arange(nc + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(nr + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#ccc", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    if nc <= 24:
        lo, hi = np.nanmin(m) if np.isfinite(m).any() else 0, np.nanmax(m) if np.isfinite(m).any() else 0
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                dark = hi > lo and (v - lo) / (hi - lo) < 0.5
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=fs, color="white" if dark else "black")
    boxes = ((outliers, {"edgecolor": "red", "linewidth": 2}),
             (flagged, {"edgecolor": "orange", "linewidth": 1, "linestyle": "--"}))
    for mask, style in boxes:
        if mask is not None:
            for i, j in zip(*np.nonzero(mask)):
                ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, **style))
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _histogram(values: np.ndarray, title: str, xlabel: str, path: Path, line: float | None = None,
               ylabel: str = "nuclei") -> tuple[str, dict]:
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=min(30, max(5, len(values) // 2)) if len(values) else 5)
    fig = Figure(figsize=(5, 3))
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="#4c72b0")
    if line is not None:
        ax.axvline(line, color="red", linestyle="--", linewidth=1, label=f"empty below {line:.1f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return _save(fig, path), {"counts": counts.tolist(), "edges": edges.tolist()}


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
    return _save(fig, path), {"bin_px": bin_px, "shape": [h, w], "values": counts.astype(int).tolist()}


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
    return _save(fig, path)


def _json_matrix(m: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in r] for r in m]


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _table(rows: list[tuple], header: tuple[str, ...] | None = None) -> str:
    e = html.escape
    head = "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _df_table(df: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in df]
    rows = [tuple(f"{v:.3g}" if isinstance(v, float) else v for v in r) for r in df[cols].itertuples(index=False)]
    return _table(rows, tuple(cols)) if rows else "<p>none</p>"


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}' \
           "</figcaption></figure>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}h1{font-size:1.5em}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.5em}figure{display:inline-block;margin:.5em;
vertical-align:top}figcaption{font-size:.8em;color:#555;max-width:480px}img{max-width:100%}table{border-collapse:
collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
th{background:#f4f4f4}.flag{color:#b00;font-weight:bold}"""
SCRIPT = """window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});"""


def write_report(path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of a run, with its PNGs, ``report.json`` and the QC tables.

    Parameters
    ----------
    path : str or os.PathLike
        The run's output Zarr or its ``.hts`` folder.
    out_dir : str or os.PathLike, optional
        Where to write; default ``<name>.hts/report/``.

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
            data["heatmaps"][col] = _json_matrix(m)
            png = _heatmap(m, res.rows, res.columns, title, cmap, out / f"plate_{col}.png",
                           outliers if col == "n_nuclei" else None, flagged if col == "n_nuclei" else None)
            plots.append(_figure(png, f"{title}, laid out as the plate ({len(res.rows)} x {len(res.columns)}; "
                                 "blank: no well)" + ("; red box: outlier well (|z| > 3), dashed orange: well with "
                                                      "flagged fields" if col == "n_nuclei" else "")))
    else:
        png, data["density"] = _density(res, out / "density.png")
        plots.append(_figure(png, "nucleus density: a 2D histogram of the nucleus centroids"))
        for col, label in (("area", "nuclear area (px)"), ("mean_intensity", "mean nuclear intensity")):
            vals = res.nuclei[col].to_numpy(float) if col in res.nuclei else np.array([])
            png, data[f"{col}_histogram"] = _histogram(vals, f"{label} per nucleus", label, out / f"hist_{col}.png")
            plots.append(_figure(png, f"histogram of {label}"))
    counts = pd.to_numeric(fields["n_nuclei"]).to_numpy(float)
    median = float(np.nanmedian(counts)) if len(counts) else 0.0
    empty_below = max(EMPTY_MIN_NUCLEI, EMPTY_FRACTION * median)
    png, data["histogram"] = _histogram(counts, "nuclei per field", "nuclei", out / "hist_fields.png", empty_below,
                                   ylabel="fields")
    plots.append(_figure(png, f"nuclei per field ({len(counts)} fields); dashed: the 'empty' threshold"))
    gallery = []
    for i, (_, row) in enumerate(_pick_fields(fields).iterrows()):
        entry = {k: row[k] for k in ("well", "field", "path", "flags")} | {"n_nuclei": int(row["n_nuclei"])}
        try:
            entry["png"] = _thumbnail(res, row, out / f"field_{i}.png")
            gallery.append(_figure(entry["png"], f"{row['path'] or 'image'}: labels outlined in yellow"))
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
        _table([("input", rec.get("input")), ("output", rec.get("output")),
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
        _df_table(flagged_f, ["well", "field", "n_nuclei", "saturated_fraction", "focus", "z", "flags"]),
        f"<h3>Flagged wells ({len(flagged_w)})</h3>",
        _df_table(flagged_w, ["well", "fields", "n_nuclei", "mean_per_field", "z", "flags"]),
        f"<h3>Edge effect{' <span class=flag>(flagged)</span>' if edge.flagged else ''}</h3>", _table(edge_rows),
        ("<p>Tables with the QC columns: <a href='qc_fields.csv'>qc_fields.csv</a>, "
         "<a href='qc_wells.csv'>qc_wells.csv</a>; the matrices drawn: <a href='report.json'>report.json</a>.</p>"),
        "<h2>Run</h2>",
        _table([("model", model.get("path")), ("sha256", model.get("sha256")), ("host", rec.get("host")),
                ("wall time (s)", f"{s.get('wall_s', 0):.1f}")]),
        "<h3>Options</h3>", _table(_flat(rec.get("options", {})), ("option", "value")),
        "<h3>Software versions</h3>", _table(list(rec.get("versions", {}).items()), ("package", "version")),
        f"<h3>Failed fields ({len(failed)})</h3>", _table(failed, ("field", "reason")) if failed else "<p>none</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
