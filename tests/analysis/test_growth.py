"""hts.analysis.growth on made-up time courses: exact and Poisson-noisy exponential growth, flat and
shrinking wells, bad points, and the per-well table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hts.analysis.growth import GROWTH_COLUMNS, GrowthFit, doubling_time, growth_table
from hts.errors import HtsError

T = np.arange(0.0, 48.1, 4.0)  # every 4 h for 48 h: 13 time points


def exponential(n0: float, doubling: float, t: np.ndarray = T) -> np.ndarray:
    return n0 * 2.0 ** (t / doubling)


def test_exact_exponential_recovers_the_doubling_time():
    fit = doubling_time(T, exponential(200, 20.0))
    assert isinstance(fit, GrowthFit) and fit.ok and fit.message == "" and fit.n == 13
    assert fit.doubling_time == pytest.approx(20.0, abs=1e-9)
    assert fit.rate == pytest.approx(1 / 20, abs=1e-12)
    assert fit.ci == pytest.approx((20.0, 20.0), abs=1e-9) and fit.r2 == pytest.approx(1.0)
    shuffled = np.random.default_rng(0).permutation(T.size)  # the order of the points does not matter
    assert doubling_time(T[shuffled], exponential(200, 20.0)[shuffled]).doubling_time == pytest.approx(20.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_counts_within_10_percent_and_the_truth_in_the_interval(seed):
    counts = np.random.default_rng(seed).poisson(exponential(200, 20.0))
    fit = doubling_time(T, counts)
    assert fit.ok
    assert fit.doubling_time == pytest.approx(20.0, rel=0.10)
    lo, hi = fit.ci
    assert lo < fit.doubling_time < hi and lo < 20.0 < hi
    assert hi - lo < 5.0  # an interval that says something
    assert 0.95 < fit.r2 < 1.0


def test_the_interval_widens_with_the_confidence():
    counts = np.random.default_rng(0).poisson(exponential(200, 20.0))
    lo95, hi95 = doubling_time(T, counts).ci
    lo99, hi99 = doubling_time(T, counts, confidence=0.99).ci
    assert lo99 < lo95 and hi99 > hi95


def test_flat_and_shrinking_wells_are_not_ok():
    flat = doubling_time(T, np.full(T.size, 150))
    assert not flat.ok and flat.doubling_time == math.inf and flat.rate == 0 and "flat" in flat.message
    shrinking = doubling_time(T, exponential(400, -30.0))
    assert not shrinking.ok and shrinking.doubling_time == math.inf and shrinking.rate < 0
    assert "shrinking" in shrinking.message
    noisy_flat = doubling_time(T, 150 + np.random.default_rng(0).integers(-10, 11, T.size))
    assert noisy_flat.rate > 0 and not noisy_flat.ok  # a slightly positive slope, within the noise
    assert math.isnan(noisy_flat.doubling_time) and "not significant" in noisy_flat.message
    assert noisy_flat.ci[1] == math.inf


def test_nan_and_zero_counts_are_skipped():
    counts = exponential(200, 20.0).astype(object)
    counts[[1, 5]] = np.nan
    counts[3] = 0
    counts[7] = -4
    counts[9] = "n/a"
    fit = doubling_time(T, counts)
    assert fit.ok and fit.n == 8 and fit.doubling_time == pytest.approx(20.0, abs=1e-9)
    t = T.copy()
    t[0] = np.nan
    assert doubling_time(t, exponential(200, 20.0)).n == 12


@pytest.mark.parametrize("t, counts", [
    ([0, 4], [100, 200]),  # 2 points
    ([0, 4, 8, 12], [0, np.nan, 100, 200]),  # 2 usable
    ([], []),
    ([0, 4, 8], [1, 2]),  # lengths differ
    ([5, 5, 5], [100, 200, 400]),  # one time point
    ("abc", None),
])
def test_too_few_or_bad_points_give_no_fit_and_never_raise(t, counts):
    fit = doubling_time(t, counts)
    assert not fit.ok and fit.message and math.isnan(fit.doubling_time) and math.isnan(fit.rate)


def test_growth_table_one_row_per_well():
    rng = np.random.default_rng(5)
    frames = [
        pd.DataFrame({"well": "B02", "t": T, "n_nuclei": exponential(100, 24.0)}),
        pd.DataFrame({"well": "A01", "t": T, "n_nuclei": rng.poisson(exponential(200, 18.0))}),
        pd.DataFrame({"well": "C03", "t": T, "n_nuclei": np.full(T.size, 80.0)}),
    ]
    long = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=1)  # rows in any order
    long.loc[(long["well"] == "B02") & (long["t"] == 0), "n_nuclei"] = np.nan  # a missed image
    table = growth_table(long)
    assert list(table.columns) == GROWTH_COLUMNS
    table = table.set_index("well")
    assert sorted(table.index) == ["A01", "B02", "C03"]
    b = table.loc["B02"]
    assert b["ok"] and b["n_timepoints"] == 12
    assert b["doubling_time"] == pytest.approx(24.0, abs=1e-9)
    assert b["first"] == pytest.approx(exponential(100, 24.0, np.array([4.0]))[0]) and b["last"] == pytest.approx(400.0)
    a = table.loc["A01"]
    assert a["ok"] and a["doubling_time_lo"] < 18.0 < a["doubling_time_hi"]
    assert a["doubling_time"] == pytest.approx(18.0, rel=0.10) and a["rate"] == pytest.approx(1 / a["doubling_time"])
    c = table.loc["C03"]
    assert not c["ok"] and c["doubling_time"] == math.inf and "flat" in c["message"]
    assert table["ok"].dtype == bool and table["n_timepoints"].dtype.kind == "i"


def test_growth_table_edge_cases():
    empty = growth_table(pd.DataFrame({"well": [], "t": [], "n_nuclei": []}))
    assert empty.empty and list(empty.columns) == GROWTH_COLUMNS
    dead = growth_table(pd.DataFrame({"well": ["A01"] * 3, "t": [0, 4, 8], "n_nuclei": [0, 0, 0]}))
    assert dead["n_timepoints"].tolist() == [0] and np.isnan(dead["first"].iloc[0]) and not dead["ok"].iloc[0]
    with pytest.raises(HtsError, match="n_nuclei"):
        growth_table(pd.DataFrame({"well": ["A01"], "t": [0]}))
