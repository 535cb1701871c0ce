"""Figures and HTML pieces of the report (:mod:`hts.analysis.report`): plate heatmaps, histograms, tables.

A well table laid out as the plate is :func:`hts.analysis.count.plate_matrix`.

Matplotlib's Agg canvas only (``Figure`` objects, no pyplot state, no display).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path.name


def heatmap(m: np.ndarray, rows: list[str], columns: list[str], title: str, cmap: str, path: Path,
             outliers: np.ndarray | None = None, flagged: np.ndarray | None = None, fmt: str = ".0f") -> str:
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
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fs, color="white" if dark else "black")
    boxes = ((outliers, {"edgecolor": "red", "linewidth": 2}),
             (flagged, {"edgecolor": "orange", "linewidth": 1, "linestyle": "--"}))
    for mask, style in boxes:
        if mask is not None:
            for i, j in zip(*np.nonzero(mask)):
                ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, **style))
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def histogram(values: np.ndarray, title: str, xlabel: str, path: Path, line: float | None = None,
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
    return save(fig, path), {"counts": counts.tolist(), "edges": edges.tolist()}


def json_matrix(m: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in r] for r in m]


def flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def table(rows: list[tuple], header: tuple[str, ...] | None = None) -> str:
    e = html.escape
    head = "<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def df_table(df: pd.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in df]
    rows = [tuple(f"{v:.3g}" if isinstance(v, float) else v for v in r) for r in df[cols].itertuples(index=False)]
    return table(rows, tuple(cols)) if rows else "<p>none</p>"


def figure_html(src: str, caption: str) -> str:
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}' \
           "</figcaption></figure>"
