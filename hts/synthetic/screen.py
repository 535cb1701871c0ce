"""A synthetic screening plate whose treatments change counts, a marker and DNA content by known amounts.

The plate is an OME-Zarr HCS plate like :func:`hts.synthetic.plate.write_plate`
writes (channels ``DAPI`` and ``GFP``, axes ``c, y, x``, uint16, truth labels
at ``labels/truth`` in every field), beside a platemap CSV, so the screening
statistics computed from ``hts run`` output can be checked against the truth.

Layout (derived from ``rows`` x ``columns``; the default 4 x 6)::

         1      2      3      4      5      6
    A  DMSO   CPD1   CPD1   CPD1   CPD1   STS     CPD1 doses 0.01  0.03  0.09  0.27 uM
    B  DMSO   CPD1   CPD1   CPD1   CPD1   STS     CPD1 doses 0.81  2.43  7.29  21.87 uM
    C  DMSO   CPD2   CPD2   CPD2   CPD2   STS     CPD2, the same doses as row A
    D  DMSO   CPD2   CPD2   CPD2   CPD2   STS     CPD2, the same doses as row B

- Column 1: negative controls (``DMSO``, role ``negative``, no dose).
- The last column: positive controls (``STS``, role ``positive``): nucleus
  count x ``positive_count`` (0.4), marker x ``positive_marker`` (3), DNA
  content like the negatives.
- The middle columns of the top ``rows // 2`` rows: ``CPD1``, the middle
  wells of the other rows: ``CPD2`` (role ``sample``). In each block the
  wells, row by row, take the ``doses`` doses ``min_dose * dose_factor**k``
  in turn, so an 8 x 12 plate has 5 replicates of each dose per compound.
- ``CPD1`` raises the marker along a rising four-parameter logistic,
  ``marker = bottom + (top - bottom) / (1 + (ec50 / dose)**hill)`` (1 at no
  dose, 3 at saturation, 2 at the EC50 of 0.5 uM); in the docs' form
  ``B + (T - B) / (1 + (dose / EC50)**h)`` that is B = 3, T = 1, h = hill.
  Counts and DNA content are unchanged.
- ``CPD2`` arrests cells in G2/M: from the lowest to the top dose (linearly
  in log dose) the G2/M fraction rises from ``g2m_negative`` (0.2) to
  ``g2m_top`` (0.7) and the count falls to x ``arrest_count`` (0.8).

Counts are set per well, not drawn from a density: every field of a well gets
``round(base * effect * (1 + e))`` nuclei, ``base`` = ``nuclei_per_field``
scaled by the field area from 320 x 320 px, ``e ~ N(0, count_cv)`` once per
well (the truth is the number of labels written, the same unless a nucleus is
hidden). Fields are easy to segment: few clusters, regular shapes, no debris,
flat illumination.

DNA content: each nucleus gets a phase (G1, S, G2M, in its well's
proportions, rounded per field, in random order; S always ``s_fraction``)
and a content: G1 1.0 and G2M 2.0 times a log-normal of CV ``dna_cv``, S
uniform over ``s_range`` (1.4-1.7). Its DAPI signal, background-subtracted
and summed over its truth label, is ``content * dna_scale`` ADU (up to photon
noise); a nucleus cut by the field edge carries its whole content in its
visible part. The DAPI background is ``dna_background`` ADU. The simple
gates ``content < 1.35`` (G1) and ``>= 1.75`` (G2M) recover the phases
almost exactly.

GFP: each nucleus has a uniform marker signal of ``marker * marker_scale``
ADU (times a per-cell log-normal of CV 10%) over ``marker_background`` ADU,
a ring of a quarter of that around it, blurred (sigma 1 px), Poisson noise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from hts.errors import HtsError
from hts.io.ngff_meta import FORMATS
from hts.synthetic.nuclei import SyntheticConfig, _check_range, _is_int, generate
from hts.synthetic.plate import _plate_root, _write_field, well_name

__all__ = ["ScreenSpec", "ScreenTruth", "design", "platemap_path", "write_screen"]

PHASES = ("G1", "S", "G2M")
_PHOTONS = 1e6  # generate() near noise-free: its image is only the template of the nuclei's shapes
_BLUR_REACH = 3.0  # px: generate's PSF (sigma 1, truncated at 3 sigma) reaches no further from a nucleus
_RING = 4.0  # px: width of the dim GFP ring around each nucleus
_RING_LEVEL = 0.25  # the ring's signal relative to its nucleus'
_CELL_CV = 0.10  # cell-to-cell CV of the marker signal
#: Nucleus appearance that segments nearly exactly: few clusters, no debris, flat illumination.
_EASY = {"cluster_fraction": 0.05, "irregularity": 0.08, "diameter_spread": 0.15, "illumination": 0.0, "debris": 0,
         "read_noise": 0.0, "dtype": "float32"}


@dataclass(frozen=True)
class ScreenSpec:
    """Layout, appearance and the known effects of a synthetic screen (see the module docstring).

    Parameters
    ----------
    rows, columns : int
        Plate layout: 2-26 rows, 3-48 columns, with at least ``doses``
        middle wells in the top ``rows // 2`` rows.
    fields, size, version : int, int, str
        Fields per well (1-99), field side (px, >= 64), NGFF version (``"0.4"`` or ``"0.5"``).
    seed : int
        Field ``f`` of well ``w`` (row by row) is generated with seed
        ``seed * 100000 + w * 100 + f``; its phases and noise from
        ``(seed, w, f)``, the well's count from ``(seed, w)``.
    diameter : float
        Median nucleus diameter, px.
    nuclei_per_field, count_cv : float
        Negative-control nuclei per 320 x 320 px field (scaled by area) and
        the well-to-well CV of counts.
    positive_count, positive_marker : float
        The positive control's count and marker relative to the negative.
    doses, min_dose, dose_factor : int, float, float
        The dose series of both compounds, uM.
    ec50, hill, marker_bottom, marker_top : float
        CPD1's rising 4PL of the marker (relative to the negative = 1).
    g2m_negative, g2m_top, s_fraction, arrest_count : float
        G2/M fraction of the negatives (and CPD1, STS) and of CPD2's top
        dose, the S fraction everywhere, CPD2's relative count at its top dose.
    s_range : tuple of float
        Range of S-phase DNA content (G1 = 1, G2M = 2).
    dna_cv, dna_scale, dna_background : float
        CV of DNA content within a phase, ADU per unit of content, DAPI background, ADU.
    marker_scale, marker_background : float
        GFP ADU above background per unit of marker, GFP background, ADU.
    """

    rows: int = 4
    columns: int = 6
    fields: int = 1
    size: int = 320
    version: str = "0.5"
    seed: int = 0
    diameter: float = 20.0
    nuclei_per_field: float = 110.0
    count_cv: float = 0.05
    positive_count: float = 0.4
    positive_marker: float = 3.0
    doses: int = 8
    min_dose: float = 0.01
    dose_factor: float = 3.0
    ec50: float = 0.5
    hill: float = 1.0
    marker_bottom: float = 1.0
    marker_top: float = 3.0
    g2m_negative: float = 0.2
    g2m_top: float = 0.7
    s_fraction: float = 0.15
    arrest_count: float = 0.8
    s_range: tuple[float, float] = (1.4, 1.7)
    dna_cv: float = 0.04
    dna_scale: float = 60_000.0
    dna_background: float = 50.0
    marker_scale: float = 400.0
    marker_background: float = 50.0

    def __post_init__(self) -> None:
        if self.version not in FORMATS:
            raise HtsError(f"version must be one of {', '.join(FORMATS)}, got {self.version!r}")
        for name, lo, hi in (("rows", 2, 26), ("columns", 3, 48), ("fields", 1, 99), ("size", 64, 8192),
                             ("seed", 0, 2**40), ("doses", 2, 24)):
            value = getattr(self, name)
            if not (_is_int(value) and lo <= value <= hi):
                raise HtsError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
        ranges = {"diameter": (4, 100), "nuclei_per_field": (0, 2000), "count_cv": (0, 0.3), "positive_count": (0, 10),
                  "positive_marker": (0, 100), "min_dose": (1e-9, 1e6), "dose_factor": (1.01, 100), "ec50": (1e-9, 1e6),
                  "hill": (0.1, 10), "marker_bottom": (0, 100), "marker_top": (0, 100), "g2m_negative": (0, 1),
                  "g2m_top": (0, 1), "s_fraction": (0, 1), "arrest_count": (0, 10), "dna_cv": (0, 0.3),
                  "dna_scale": (1, 1e6), "dna_background": (0, 1e4), "marker_scale": (0, 1e4),
                  "marker_background": (0, 1e4)}
        for name, (lo, hi) in ranges.items():
            _check_range(name, getattr(self, name), lo, hi)
        s = self.s_range
        if not (isinstance(s, tuple) and len(s) == 2 and 1.0 <= s[0] < s[1] <= 2.0):
            raise HtsError(f"s_range must be a tuple (low, high) with 1 <= low < high <= 2, got {s!r}")
        if self.s_fraction + max(self.g2m_negative, self.g2m_top) > 1:
            raise HtsError(f"s_fraction + g2m_negative (or g2m_top) must be <= 1, got {self}")
        if (self.rows // 2) * (self.columns - 2) < self.doses:
            raise HtsError(f"doses ({self.doses}) must fit in the {self.rows // 2} x {self.columns - 2} middle wells "
                           f"of each compound; use more rows or columns or fewer doses")


@dataclass(frozen=True)
class ScreenTruth:
    """What :func:`write_screen` put in the plate.

    Attributes
    ----------
    platemap_path : Path
        The platemap CSV (``well`` as ``A01``, ``treatment``, ``dose`` in uM, empty for controls, ``role``).
    wells : pandas.DataFrame
        One row per well, row by row: ``well`` (``"B/3"``), ``well_id``
        (``"B03"``), ``treatment``, ``dose`` (NaN for controls), ``role``,
        ``count_effect`` (designed count relative to the negative),
        ``n_nuclei`` (true count, all fields), ``marker`` (relative level,
        negative = 1), ``g1_fraction``, ``s_fraction``, ``g2m_fraction``
        (as drawn) and ``dna_background`` (ADU).
    nuclei : pandas.DataFrame
        One row per truth nucleus: ``well``, ``field`` (int), ``label`` (its
        value in ``labels/truth``), ``phase`` (G1, S, G2M), ``dna_content``
        (G1 ~1, G2M ~2) and ``marker`` (its own relative level).
    ec50 : dict of str to float
        True EC50 (uM) of each dose-response of the marker: ``{"CPD1": 0.5}``.
    hill : float
        Its Hill slope (of the rising 4PL, see the module docstring).
    z_prime_counts : float
        Z' of the true per-well counts, positive vs negative control wells (sample SDs).
    spec : ScreenSpec
        The specification the plate was written from.
    """

    platemap_path: Path
    wells: pd.DataFrame
    nuclei: pd.DataFrame
    ec50: dict[str, float]
    hill: float
    z_prime_counts: float
    spec: ScreenSpec


def design(spec: ScreenSpec = ScreenSpec()) -> pd.DataFrame:
    """The designed treatment of every well (layout: see the module docstring).

    Parameters
    ----------
    spec : ScreenSpec, optional
        Layout and effect sizes.

    Returns
    -------
    pandas.DataFrame
        One row per well, row by row: ``well`` (``"B/3"``), ``well_id`` (``"B03"``), ``treatment``, ``dose``
        (uM, NaN for controls), ``role``, ``count_effect``, ``marker`` and ``g2m_fraction`` (designed).
    """
    half, middle = spec.rows // 2, spec.columns - 2
    doses = [float(f"{spec.min_dose * spec.dose_factor ** k:.6g}") for k in range(spec.doses)]
    out = []
    for r in range(spec.rows):
        for c in range(spec.columns):
            row, col = well_name(r, c)
            well = {"well": f"{row}/{col}", "well_id": f"{row}{c + 1:02d}", "treatment": "DMSO", "dose": math.nan,
                    "role": "negative", "count_effect": 1.0, "marker": 1.0, "g2m_fraction": spec.g2m_negative}
            if c == spec.columns - 1:
                well.update(treatment="STS", role="positive", count_effect=spec.positive_count,
                            marker=spec.positive_marker)
            elif c > 0:
                k = ((r if r < half else r - half) * middle + c - 1) % spec.doses
                dose, t = doses[k], k / (spec.doses - 1)
                well.update(dose=dose, role="sample")
                if r < half:
                    rise = (spec.marker_top - spec.marker_bottom) / (1.0 + (spec.ec50 / dose) ** spec.hill)
                    well.update(treatment="CPD1", marker=spec.marker_bottom + rise)
                else:
                    well.update(treatment="CPD2", count_effect=1.0 + (spec.arrest_count - 1.0) * t,
                                g2m_fraction=spec.g2m_negative + (spec.g2m_top - spec.g2m_negative) * t)
            out.append(well)
    return pd.DataFrame(out)


def platemap_path(path: str | os.PathLike) -> Path:
    """The platemap CSV beside the plate Zarr ``path``: ``screen.zarr`` -> ``screen.platemap.csv``."""
    p = Path(path)
    stem = p.name[:-5] if p.name.lower().endswith(".zarr") else p.name
    return p.with_name(stem + ".platemap.csv")


def _lognormal(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
    """``n`` log-normal factors of median 1 and coefficient of variation ``cv``."""
    return rng.lognormal(0.0, math.sqrt(math.log1p(cv * cv)), n)


def _apportion(n: int, p: list[float]) -> np.ndarray:
    """``n`` split in proportions ``p`` (largest remainders), so a field's phase fractions are as designed."""
    exact = n * np.asarray(p, float)
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact, kind="stable")[: n - counts.sum()]] += 1
    return counts


def _dna_plane(template: np.ndarray, labels: np.ndarray, nearest: np.ndarray, content: np.ndarray,
               spec: ScreenSpec, rng: np.random.Generator) -> np.ndarray:
    """DAPI: each nucleus' template (and its blur tail) scaled to sum to ``content * dna_scale`` over its label."""
    sums = ndimage.sum_labels(template, labels, np.arange(1, content.size + 1))
    gain = np.concatenate([[0.0], content * spec.dna_scale / np.maximum(sums, 1e-12)])
    return np.clip(rng.poisson(spec.dna_background + template * gain[nearest]), 0, 65535).astype(np.uint16)


def _marker_plane(labels: np.ndarray, nearest: np.ndarray, dist: np.ndarray, marker: np.ndarray,
                  spec: ScreenSpec, rng: np.random.Generator) -> np.ndarray:
    """GFP: a uniform level per nucleus, a dim ring around it, blurred, over the background, Poisson noise."""
    level = np.concatenate([[0.0], marker * spec.marker_scale])[nearest]
    signal = level * np.where(labels > 0, 1.0, np.where(dist <= _RING, _RING_LEVEL, 0.0))
    signal = ndimage.gaussian_filter(signal, 1.0)
    return np.clip(rng.poisson(spec.marker_background + signal), 0, 65535).astype(np.uint16)


def _field(spec: ScreenSpec, cfg: SyntheticConfig, well: tuple, seed: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One field of ``well`` (a row of :func:`design`): ``(2, H, W)`` image, truth labels, per-nucleus truth."""
    raw, labels = generate(cfg, seed=seed)
    n = int(labels.max())
    g2m = well.g2m_fraction
    phase = rng.permutation(np.repeat(np.arange(3), _apportion(n, [1.0 - spec.s_fraction - g2m, spec.s_fraction, g2m])))
    spread = _lognormal(rng, spec.dna_cv, n)
    content = np.choose(phase, [spread, rng.uniform(*spec.s_range, n), 2.0 * spread])
    marker = well.marker * _lognormal(rng, _CELL_CV, n)
    if n:
        dist, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        nearest = labels[idx[0], idx[1]]
    else:
        dist, nearest = np.full(labels.shape, np.inf), np.zeros_like(labels)
    far = dist > _BLUR_REACH
    background = float(raw[far].mean()) if far.any() else float(np.percentile(raw, 1))
    template = np.clip((raw - background) / _PHOTONS, 0.0, None)
    template[far] = 0.0
    dapi = _dna_plane(template, labels, nearest, content, spec, rng)
    gfp = _marker_plane(labels, nearest, dist, marker, spec, rng)
    truth = {"label": np.arange(1, n + 1), "phase": np.asarray(PHASES)[phase], "dna_content": content, "marker": marker}
    return np.stack([dapi, gfp]), labels, truth


def write_screen(path: str | os.PathLike, spec: ScreenSpec = ScreenSpec()) -> ScreenTruth:
    """Write a synthetic screening plate and its platemap CSV; return the truth.

    Parameters
    ----------
    path : str or os.PathLike
        The plate's Zarr folder (overwritten); the platemap is written to
        :func:`platemap_path` of it (``screen.zarr`` -> ``screen.platemap.csv``).
    spec : ScreenSpec, optional
        Layout, effect sizes, NGFF version and seed.

    Returns
    -------
    ScreenTruth
        Per-well and per-nucleus truth, the EC50, Hill slope and the Z' of the true counts.
    """
    fmt = FORMATS[spec.version]()
    layout = design(spec)
    root, _ = _plate_root(path, spec.rows, spec.columns, spec.fields, fmt, "hts synthetic screen")
    base = spec.nuclei_per_field * (spec.size / 320) ** 2
    cfg = SyntheticConfig(shape=(spec.size, spec.size), diameter=spec.diameter, photons=_PHOTONS, **_EASY)
    parts = []
    for w, well in enumerate(layout.itertuples(index=False)):
        e = spec.count_cv * np.random.default_rng((spec.seed, w)).standard_normal()
        n = int(np.clip(round(base * well.count_effect * (1.0 + e)), 0, spec.size**2 // 16))
        for f in range(spec.fields):
            image, labels, nuclei = _field(spec, replace(cfg, n_nuclei=n), well, spec.seed * 100_000 + w * 100 + f,
                                           np.random.default_rng((spec.seed, w, f)))
            _write_field(root[well.well].require_group(str(f)), image, labels, fmt)
            parts.append(pd.DataFrame({"well": well.well, "field": f, **nuclei}))
    nuclei = pd.concat(parts, ignore_index=True)
    counts = nuclei.groupby(["well", "phase"]).size().unstack().reindex(index=layout["well"], columns=PHASES).fillna(0)
    total = counts.sum(axis=1).to_numpy()
    wells = layout.drop(columns="g2m_fraction").assign(n_nuclei=total.astype(int))
    with np.errstate(invalid="ignore", divide="ignore"):
        for phase, name in zip(PHASES, ("g1_fraction", "s_fraction", "g2m_fraction")):
            wells[name] = counts[phase].to_numpy() / total
    wells["dna_background"] = spec.dna_background
    pmap = platemap_path(path)
    wells.rename(columns={"well": "path", "well_id": "well"})[["well", "treatment", "dose", "role"]].to_csv(
        pmap, index=False, na_rep="")
    pos = wells.loc[wells["role"] == "positive", "n_nuclei"]
    neg = wells.loc[wells["role"] == "negative", "n_nuclei"]
    z = 1.0 - 3.0 * (pos.std(ddof=1) + neg.std(ddof=1)) / abs(pos.mean() - neg.mean())
    return ScreenTruth(pmap, wells, nuclei, {"CPD1": spec.ec50}, spec.hill, float(z), spec)
