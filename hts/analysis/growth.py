"""Per-well growth from nucleus counts over time: doubling time, growth rate and its confidence interval.

A live-cell proliferation screen counts each well's nuclei every few hours.
Exponential growth, ``N(t) = N0 * 2^(t / T)``, is a straight line in log2:
``log2 N = a + rate * t`` with ``rate = 1 / T`` doublings per unit of ``t``.
:func:`doubling_time` fits that line by least squares
(:func:`scipy.stats.linregress`) over the time points with a positive count
and gives ``T = 1 / rate``. The confidence interval of ``T`` comes from the
slope's t-distribution interval ``rate +- t_(n-2) x stderr``, inverted (the
bounds swap: the fastest rate gives the shortest doubling time).

A fit is ``ok`` only when the rate is positive and significant (the lower
bound of its interval above 0). Otherwise the doubling time is ``inf`` for a
flat or shrinking well (``rate <= 0``: it never doubles) and NaN for a
positive rate the data do not distinguish from 0, with a ``message`` saying
why; fewer than ``MIN_POINTS`` usable points give no fit at all. Bad data
(NaN, zero or negative counts, text) never raise: those points are skipped.

All times are in the plate's own unit (e.g. hours): the doubling time comes
out in it, the rate per it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hts.errors import HtsError

MIN_POINTS = 3  # a line through 2 points has no residual and no interval
CONFIDENCE = 0.95  # of the doubling time's interval and of the rate's significance

GROWTH_COLUMNS = ["well", "n_timepoints", "first", "last", "doubling_time", "doubling_time_lo",
                  "doubling_time_hi", "rate", "r2", "ok", "message"]


@dataclass(frozen=True)
class GrowthFit:
    """An exponential fit of one well's counts over time.

    Attributes
    ----------
    doubling_time : float
        ``1 / rate`` in the unit of ``t``; ``inf`` when ``rate <= 0``, NaN when
        there is no fit or the rate is not significant.
    rate : float
        Slope of log2(count) on ``t``: doublings per unit of ``t``; NaN
        without a fit.
    ci : tuple of float
        ``(lo, hi)``, the ``CONFIDENCE`` interval of the doubling time;
        ``hi`` is ``inf`` when the rate's interval reaches 0. NaN without a
        fit.
    r2 : float
        Coefficient of determination of the log2 fit; NaN without a fit or
        when every count is the same (0 / 0).
    n : int
        Points used (finite ``t``, finite count > 0).
    ok : bool
        The rate is positive and significant.
    message : str
        Why not ok; ``""`` when ok.
    """

    doubling_time: float
    rate: float
    ci: tuple[float, float]
    r2: float
    n: int
    ok: bool
    message: str


def _numbers(values) -> np.ndarray:
    """Flat float array; entries that are not numbers become NaN."""
    return pd.to_numeric(pd.Series(np.ravel(np.asarray(values, dtype=object))), errors="coerce").to_numpy(float)


def _no_fit(n: int, message: str) -> GrowthFit:
    nan = float("nan")
    return GrowthFit(nan, nan, (nan, nan), nan, n, False, message)


def usable_points(t, counts) -> tuple[np.ndarray, np.ndarray]:
    """The ``(t, count)`` pairs a growth fit can use: both finite and count > 0, in input order.

    Parameters
    ----------
    t, counts : array-like, same length
        Time points and nucleus counts; non-numbers count as NaN.

    Returns
    -------
    t, counts : (n,) float64 ndarray
        Empty when the lengths differ.
    """
    t, c = _numbers(t), _numbers(counts)
    if t.size != c.size:
        return np.zeros(0), np.zeros(0)
    keep = np.isfinite(t) & np.isfinite(c) & (c > 0)
    return t[keep], c[keep]


def doubling_time(t, counts, confidence: float = CONFIDENCE) -> GrowthFit:
    """Doubling time of exponential growth, from a least-squares line through log2(count) over ``t``.

    Parameters
    ----------
    t : array-like of float, shape (n,)
        Time points, in the plate's unit (e.g. hours); any order, repeats
        allowed (several fields at one time point).
    counts : array-like, shape (n,)
        Nucleus counts at ``t``. NaN, zero and negative counts are skipped
        (log2 of them is undefined: an empty or failed image, not a count).
    confidence : float, optional
        Level of the doubling time's interval and of the test that the rate
        is above 0 (default 0.95).

    Returns
    -------
    GrowthFit
        Never raises on bad data: no usable fit gives ``ok=False`` and a
        ``message``.
    """
    n_t, n_c = _numbers(t).size, _numbers(counts).size
    if n_t != n_c:
        return _no_fit(0, f"t has {n_t} values but counts has {n_c}")
    tt, cc = usable_points(t, counts)
    n = int(tt.size)
    if n < MIN_POINTS:
        return _no_fit(n, f"{n} time point(s) with a count > 0; at least {MIN_POINTS} are needed")
    if np.ptp(tt) == 0:
        return _no_fit(n, "all usable time points are equal")
    y = np.log2(cc)
    if np.ptp(y) == 0:  # linregress leaves r and stderr NaN on a constant y; the fit is exact, rate 0
        return GrowthFit(float("inf"), 0.0, (float("inf"), float("inf")), float("nan"), n, False,
                         "no growth: the count is flat (rate 0)")
    fit = stats.linregress(tt, y)
    rate, stderr = float(fit.slope), float(fit.stderr)
    if not (np.isfinite(rate) and np.isfinite(stderr)):
        return _no_fit(n, "the fit failed")
    r2 = float(fit.rvalue) ** 2
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2)) * stderr
    lo_rate, hi_rate = rate - half, rate + half
    ci = (1.0 / hi_rate if hi_rate > 0 else float("inf"), 1.0 / lo_rate if lo_rate > 0 else float("inf"))
    if rate <= 0:
        kind = "flat" if rate == 0 else "shrinking"
        return GrowthFit(float("inf"), rate, ci, r2, n, False, f"no growth: the count is {kind} (rate {rate:.3g} <= 0)")
    if not lo_rate > 0:
        return GrowthFit(float("nan"), rate, ci, r2, n, False,
                         f"growth not significant: the rate's {confidence:.0%} interval "
                         f"[{lo_rate:.3g}, {hi_rate:.3g}] includes 0")
    return GrowthFit(1.0 / rate, rate, ci, r2, n, True, "")


def growth_table(nuclei_per_well_t: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One growth fit per well from a long table of counts over time.

    Parameters
    ----------
    nuclei_per_well_t : pandas.DataFrame
        Columns ``well``, ``t`` (in the plate's time unit) and ``n_nuclei``;
        one row per well and time point (other columns are ignored).
    confidence : float, optional
        Level of the doubling time's interval (see :func:`doubling_time`).

    Returns
    -------
    pandas.DataFrame
        One row per well, in order of first appearance: ``well``,
        ``n_timepoints`` (points used by the fit: finite ``t`` and count > 0),
        ``first`` and ``last`` (the counts at the earliest and latest of those
        points; NaN when none), ``doubling_time``, ``doubling_time_lo``,
        ``doubling_time_hi``, ``rate``, ``r2``, ``ok`` and ``message`` (see
        :class:`GrowthFit`).

    Raises
    ------
    HtsError
        When a required column is missing.
    """
    missing = [c for c in ("well", "t", "n_nuclei") if c not in nuclei_per_well_t.columns]
    if missing:
        raise HtsError(f"growth table needs columns well, t, n_nuclei; missing {', '.join(missing)}")
    rows = []
    for well, group in nuclei_per_well_t.groupby("well", sort=False, dropna=False):
        tt, cc = usable_points(group["t"], group["n_nuclei"])
        order = np.argsort(tt, kind="stable")
        fit = doubling_time(tt, cc, confidence)
        rows.append({
            "well": well,
            "n_timepoints": fit.n,
            "first": float(cc[order[0]]) if cc.size else float("nan"),
            "last": float(cc[order[-1]]) if cc.size else float("nan"),
            "doubling_time": fit.doubling_time,
            "doubling_time_lo": fit.ci[0],
            "doubling_time_hi": fit.ci[1],
            "rate": fit.rate,
            "r2": fit.r2,
            "ok": fit.ok,
            "message": fit.message,
        })
    return pd.DataFrame(rows, columns=GROWTH_COLUMNS).astype({"n_timepoints": int, "ok": bool})
