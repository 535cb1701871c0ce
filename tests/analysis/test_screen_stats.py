"""hts.analysis.screen_stats on hand-made data: Z', SSMD, POC/NPI, median polish and B-score, 4PL fits, DNA content.

The median polish is checked against R's documented ``medpolish`` example and
against an independent plain-loop reimplementation of R's algorithm written
here; the 4PL fit and the DNA-content phases on synthetic data with known
parameters (fixed seeds).
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from hts.analysis.qc import MAD_SCALE, MEAN_AD_SCALE
from hts.analysis.screen_stats import (G1_GATE, G2M_GATE, S_GATE, b_score, dna_content, fit_four_pl, four_pl,
                                       median_polish, normalized_percent_inhibition, percent_of_control, ssmd,
                                       z_prime)


# --- Z', SSMD, normalisation -------------------------------------------------------------------------------------

def test_z_prime_and_ssmd_by_hand():
    pos, neg = [10.0, 12.0, 14.0], [1.0, 2.0, 3.0]  # means 12 and 2, sample SDs 2 and 1
    assert z_prime(pos, neg) == pytest.approx(1 - 3 * (2 + 1) / 10)  # 0.1
    assert z_prime(neg, pos) == pytest.approx(0.1)  # |mean difference|
    assert ssmd(pos, neg) == pytest.approx(10 / math.sqrt(5))
    assert ssmd(neg, pos) == pytest.approx(-10 / math.sqrt(5))  # signed
    assert z_prime([10.0, 12, 14, np.nan], [np.nan, 1, 2, 3]) == pytest.approx(0.1)  # NaN ignored
    assert ssmd(np.array([[10.0, 12], [14, np.nan]]), [1.0, 2, 3]) == pytest.approx(10 / math.sqrt(5))
    assert z_prime([5.0, 5, 5], [1.0, 1, 1]) == 1.0  # no spread: ideal


@pytest.mark.parametrize("pos, neg", [([1.0], [1.0, 2.0]), ([1.0, 2.0], [3.0, np.nan]), ([], []),
                                      ([1.0, 3.0], [0.0, 4.0])])  # too few values; equal means
def test_z_prime_degenerate_is_nan(pos, neg):
    assert math.isnan(z_prime(pos, neg))


def test_ssmd_degenerate_is_nan():
    assert math.isnan(ssmd([1.0], [1.0, 2.0]))
    assert math.isnan(ssmd([5.0, 5.0], [1.0, 1.0]))  # both SDs 0
    assert ssmd([1.0, 3.0], [0.0, 4.0]) == 0.0


def test_percent_of_control_and_npi():
    v = np.array([100.0, 50.0, 10.0])
    assert percent_of_control(v, 100.0).tolist() == [100.0, 50.0, 10.0]
    assert normalized_percent_inhibition(v, 10.0, 100.0) == pytest.approx([0, 50 / 0.9, 100])  # (pos, neg)
    assert normalized_percent_inhibition(v, positive_mean=200.0, negative_mean=100.0) == pytest.approx([0, -50, -90])
    s = pd.Series([20.0, 40.0], index=["A01", "B02"])
    assert percent_of_control(s, 40.0).to_dict() == {"A01": 50.0, "B02": 100.0}
    assert np.isnan(percent_of_control(v, 0.0)).all()
    assert np.isnan(normalized_percent_inhibition(v, 5.0, 5.0)).all()


# --- median polish and B-score -----------------------------------------------------------------------------------

def reference_medpolish(x: list[list[float]], max_iter: int = 10, tol: float = 1e-6):
    """R's medpolish(x, eps=tol, maxiter=max_iter, na.rm=TRUE), with plain loops and statistics.median."""
    z = [row[:] for row in x]
    nr, nc = len(z), len(z[0])
    nan = float("nan")

    def med(values):
        v = [a for a in values if not math.isnan(a)]
        return statistics.median(v) if v else nan

    t, r, c, old, it = 0.0, [0.0] * nr, [0.0] * nc, 0.0, 0
    for it in range(1, max_iter + 1):
        for i in range(nr):
            d = med(z[i])
            for j in range(nc):
                z[i][j] = z[i][j] - d
            r[i] = r[i] + d
        d = med(c)
        c = [cj - d for cj in c]
        t = t + d
        for j in range(nc):
            d = med([z[i][j] for i in range(nr)])
            for i in range(nr):
                z[i][j] = z[i][j] - d
            c[j] = c[j] + d
        d = med(r)
        r = [ri - d for ri in r]
        t = t + d
        new = sum(abs(z[i][j]) for i in range(nr) for j in range(nc) if not math.isnan(z[i][j]))
        if new == 0 or abs(new - old) < tol * new:
            break
        old = new
    return t, r, c, z, it


ROW = np.array([-2.5, -1.5, 0.5, 0.5, 0.5, 0.5, 2.0, 3.5])  # ties at the median: outliers cannot move it
COL = np.array([-4.0, -3.0, -1.25, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 2.0, 3.0, 5.5])
OUTLIERS = {(0, 3): 40.0, (2, 7): -35.0, (4, 10): 25.0, (6, 0): -50.0, (7, 5): 60.0}


def additive_plate(noise: float = 0.0, seed: int = 0) -> np.ndarray:
    x = 100.0 + ROW[:, None] + COL[None, :] + np.random.default_rng(seed).normal(0, noise, (8, 12))
    for well, v in OUTLIERS.items():
        x[well] += v
    return x


def test_median_polish_recovers_additive_plate_and_outliers():
    fit = median_polish(additive_plate())
    expected = np.zeros((8, 12))
    for well, v in OUTLIERS.items():
        expected[well] = v
    np.testing.assert_allclose(fit.residuals, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fit.row, ROW - 0.5, atol=1e-9)  # effects centred on their medians
    np.testing.assert_allclose(fit.column, COL - 0.75, atol=1e-9)
    assert fit.overall == pytest.approx(101.25, abs=1e-9) and fit.converged and fit.iterations == 2
    np.testing.assert_allclose(fit.fitted + fit.residuals, additive_plate(), atol=1e-9)


def test_median_polish_r_documentation_example():
    # R ?medpolish: deaths from sport parachuting (ABC of EDA, p. 224); R prints overall 8,
    # row effects 6 -1 0 2 -8, column effects 0 -1 0 and these residuals, after 2 iterations.
    deaths = [[14, 15, 14], [7, 4, 7], [8, 2, 10], [15, 9, 10], [0, 2, 0]]
    fit = median_polish(deaths)
    assert fit.overall == 8 and fit.row.tolist() == [6, -1, 0, 2, -8] and fit.column.tolist() == [0, -1, 0]
    assert fit.residuals.tolist() == [[0, 2, 0], [0, -2, 0], [0, -5, 2], [5, 0, 0], [0, 3, 0]]
    assert fit.iterations == 2


@pytest.mark.parametrize("case", ["noisy", "nan_wells", "nan_row", "odd_shape", "few_iterations"])
def test_median_polish_equals_plain_reimplementation(case):
    rng = np.random.default_rng(7)
    x = additive_plate(noise=1.0, seed=3) + rng.standard_cauchy((8, 12))  # heavy tails: medians matter
    max_iter = 10
    if case == "nan_wells":
        x[rng.random((8, 12)) < 0.12] = np.nan
    elif case == "nan_row":
        x[3, :] = np.nan
        x[:, 5] = np.nan
    elif case == "odd_shape":
        x = x[:7, :9]
    elif case == "few_iterations":
        max_iter = 2
    t, r, c, z, it = reference_medpolish(x.tolist(), max_iter=max_iter)
    fit = median_polish(x, max_iter=max_iter)
    assert fit.iterations == it
    assert fit.overall == pytest.approx(t, abs=1e-12)
    np.testing.assert_allclose(fit.row, r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fit.column, c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fit.residuals, np.array(z), rtol=0, atol=1e-12)  # NaN where NaN
    assert (np.isnan(fit.residuals) == np.isnan(x)).all()
    if case == "nan_row":
        assert np.isnan(fit.row[3]) and np.isnan(fit.column[5]) and np.isfinite(fit.overall)
    if case == "few_iterations":
        assert not fit.converged


def test_median_polish_rejects_non_matrix():
    with pytest.raises(ValueError, match="2-D"):
        median_polish(np.zeros(5))


def test_b_score_is_residuals_over_mad():
    x = additive_plate(noise=1.0, seed=11)
    b = b_score(x)
    res = median_polish(x).residuals
    mad = np.median(np.abs(res - np.median(res)))
    np.testing.assert_allclose(b, res / (MAD_SCALE * mad), rtol=1e-12)
    hits = np.zeros((8, 12), bool)
    for well in OUTLIERS:
        hits[well] = True
    assert (np.abs(b[hits]) > 15).all() and (np.abs(b[~hits]) < 4).all()
    assert np.sign(b[hits]).tolist() == np.sign([OUTLIERS[w] for w in sorted(OUTLIERS)]).tolist()


def test_b_score_falls_back_when_mad_is_zero_and_keeps_nan():
    b = b_score(additive_plate())  # exact additive plate: 91 of 96 residuals are 0, MAD 0
    mean_ad = sum(abs(v) for v in OUTLIERS.values()) / 96
    for well, v in OUTLIERS.items():
        assert b[well] == pytest.approx(v / (MEAN_AD_SCALE * mean_ad))
    assert np.isfinite(b).all() and np.count_nonzero(np.abs(b) > 1e-9) == 5
    assert (b_score(np.full((4, 6), 3.0)) == 0).all()  # all equal: 0, not NaN or inf
    x = additive_plate(noise=1.0)
    x[2, 2] = np.nan
    b = b_score(x)
    assert np.isnan(b[2, 2]) and np.isfinite(np.delete(b.ravel(), 2 * 12 + 2)).all()
    assert np.isnan(b_score(np.full((2, 3), np.nan))).all()


# --- four-parameter logistic -------------------------------------------------------------------------------------

DOSES = 0.3 * 3.0 ** np.arange(-4, 4)  # 8 doses, 3-fold, centred on the EC50 (uM)


def curve(bottom, top, ec50, hill, seed, noise=0.03):
    d = np.repeat(DOSES, 2)  # 2 replicates
    y = four_pl(d, bottom, top, ec50, hill)
    return d, y + np.random.default_rng(seed).normal(0, noise * abs(top - bottom), d.size)


def test_four_pl_shape():
    assert four_pl(0.3, 5, 100, 0.3, 1.2) == pytest.approx(52.5)
    assert four_pl([0.0, 1e9], 5, 100, 0.3, 1.2) == pytest.approx([100, 5])  # top at dose 0, bottom at infinity
    assert four_pl([0.0, 1e9], 5, 100, 0.3, -1.2) == pytest.approx([5, 100])


@pytest.mark.parametrize("hill", [1.2, -1.2], ids=["decreasing", "increasing"])
def test_fit_four_pl_recovers_ec50(hill):
    d, y = curve(5.0, 100.0, 0.3, hill, seed=2)
    fit = fit_four_pl(d, y)
    assert fit.converged and fit.n == 16 and fit.message == "ok"
    assert fit.ec50 == pytest.approx(0.3, rel=0.10)
    assert fit.ec50_ci[0] < 0.3 < fit.ec50_ci[1]
    assert fit.hill_ci[0] < hill < fit.hill_ci[1] and np.sign(fit.hill) == np.sign(hill)
    assert fit.bottom == pytest.approx(5, abs=6) and fit.top == pytest.approx(100, abs=6)
    lo, hi = fit.ec50_ci  # asymmetric on the linear scale, symmetric in log
    assert hi - fit.ec50 > fit.ec50 - lo and math.log(hi / fit.ec50) == pytest.approx(math.log(fit.ec50 / lo))
    np.testing.assert_allclose(fit.predict(DOSES), four_pl(DOSES, 5, 100, 0.3, hill), atol=6)


def test_fit_four_pl_reports_bottom_below_top():
    d, y = curve(100.0, 5.0, 0.3, 1.2, seed=4)  # bottom > top: a rising curve written the other way
    fit = fit_four_pl(d, y)
    assert fit.converged and fit.bottom < fit.top and fit.hill < 0
    np.testing.assert_allclose(fit.predict(DOSES), four_pl(DOSES, 100, 5, 0.3, 1.2), atol=6)


def test_fit_four_pl_ci_coverage_over_seeds():
    hits, errors = 0, []
    for seed in range(40):
        fit = fit_four_pl(*curve(0.0, 100.0, 0.3, 1.2, seed=100 + seed))
        assert fit.converged
        hits += fit.ec50_ci[0] < 0.3 < fit.ec50_ci[1]
        errors.append(abs(math.log10(fit.ec50 / 0.3)))
    assert hits >= 34  # nominal 95% of 40 = 38
    assert np.median(errors) < math.log10(1.10)


@pytest.mark.parametrize("dose, response, says", [
    (np.repeat(DOSES, 2), np.full(16, 42.0), "constant"),
    ([0.1, 1.0, 10.0], [90.0, 50.0, 10.0], "3 points"),
    (np.repeat(DOSES[:3], 3), np.repeat([90.0, 50.0, 10.0], 3), "3 doses"),
    (-np.repeat(DOSES, 2), np.linspace(100, 0, 16), "dose <= 0"),
    ([1.0, 2.0], [1.0, 2.0, 3.0], "2 doses but 3 responses"),
    ([], [], "0 points"),
])
def test_fit_four_pl_bad_data_does_not_raise(dose, response, says):
    fit = fit_four_pl(dose, response)
    assert not fit.converged and says in fit.message
    assert all(math.isnan(v) for v in (fit.bottom, fit.top, fit.ec50, fit.hill, *fit.ec50_ci, *fit.hill_ci))
    assert np.isnan(fit.predict([1.0])).all()


def test_fit_four_pl_drops_nonpositive_and_nan_doses_with_a_message():
    d, y = curve(5.0, 100.0, 0.3, 1.2, seed=2)
    fit = fit_four_pl(np.r_[0.0, -1.0, np.nan, d], np.r_[100.0, 100.0, 50.0, y])
    assert fit.converged and fit.n == 16
    assert "2 points with dose <= 0 excluded (doses -1, 0)" in fit.message and "non-finite" in fit.message
    assert fit.ec50 == pytest.approx(fit_four_pl(d, y).ec50, rel=1e-6)


def test_fit_four_pl_flags_extrapolated_ec50():
    d = np.repeat(DOSES, 2)
    fit = fit_four_pl(d, four_pl(d, 0.0, 100.0, 30.0, 1.0) + np.random.default_rng(0).normal(0, 1, d.size))
    assert "outside the tested dose range" in fit.message and fit.ec50 > DOSES.max()


# --- DNA content -------------------------------------------------------------------------------------------------

def population(g1: float, s: float, g2: float, n: int = 20000, seed: int = 0, base: float = 5e4, cv: float = 0.06):
    """Integrated intensities: G1 log-normal (CV ``cv``) at ``base``, G2 at 2 x base, S uniform between."""
    rng = np.random.default_rng(seed)
    k = rng.multinomial(n, [g1, s, g2])
    r = np.concatenate([np.exp(rng.normal(0, cv, k[0])), rng.uniform(1, 2, k[1]), 2 * np.exp(rng.normal(0, cv, k[2]))])
    return base * rng.permutation(r), k / n


def gated(r: np.ndarray) -> list[float]:
    """The phase fractions with the true G1 position (r = intensity / base)."""
    return [float(np.mean((r >= a) & (r < b))) for a, b in (G1_GATE, S_GATE, G2M_GATE)]


@pytest.mark.parametrize("fractions", [(0.6, 0.0, 0.4), (0.3, 0.0, 0.7), (0.5, 0.2, 0.3), (0.2, 0.1, 0.7)],
                         ids=["G1-G2", "G2-dominated", "with-S", "G2-dominated-with-S"])
def test_dna_content_phases(fractions):
    x, true = population(*fractions, seed=sum(int(100 * f) for f in fractions))
    dna = dna_content(x)
    got = [dna.g1_fraction, dna.s_fraction, dna.g2m_fraction]
    assert dna.n == x.size and dna.g1_peak == pytest.approx(5e4, rel=0.02)
    np.testing.assert_allclose(got, gated(x / 5e4), atol=0.01)  # the gates applied at the true G1 peak
    if fractions[1] == 0:  # without S the gates separate the phases: the generating fractions
        np.testing.assert_allclose(got, true, atol=0.03)
    assert dna.counts.sum() == np.count_nonzero(x / dna.g1_peak < 4) and dna.edges[-1] == 4.0
    centres = (dna.edges[:-1] + dna.edges[1:]) / 2  # the histogram's tallest bin: the dominant phase's r
    assert centres[np.argmax(dna.counts)] == pytest.approx(2.0 if fractions[2] > 0.5 else 1.0, abs=0.1)


def test_dna_content_is_scale_invariant():
    x, _ = population(0.2, 0.1, 0.7, seed=5)
    a, b = dna_content(x), dna_content(1000 * x)
    assert b.g1_peak == pytest.approx(1000 * a.g1_peak, rel=1e-6)
    assert (b.g1_fraction, b.s_fraction, b.g2m_fraction) == pytest.approx((a.g1_fraction, a.s_fraction,
                                                                          a.g2m_fraction), abs=1e-3)


def test_dna_content_debris_counts_in_n_only():
    x, _ = population(0.6, 0.0, 0.4, n=19000, seed=9)
    debris = 5e4 * np.random.default_rng(9).uniform(0.05, 0.45, 1000)  # small sub-G1 bump, below 25% of G1
    dna = dna_content(np.r_[x, debris, np.nan, np.nan])
    assert dna.n == 20000 and dna.g1_peak == pytest.approx(5e4, rel=0.02)
    assert dna.g1_fraction == pytest.approx(0.6 * 0.95, abs=0.03) and dna.g2m_fraction == pytest.approx(0.38, abs=0.03)
    assert dna.g1_fraction + dna.s_fraction + dna.g2m_fraction == pytest.approx(0.95, abs=0.01)


def test_dna_content_small_and_empty_input():
    empty = dna_content([])
    assert empty.n == 0 and math.isnan(empty.g1_peak) and math.isnan(empty.g1_fraction)
    assert empty.counts.shape == (160,) and empty.counts.sum() == 0
    assert math.isnan(dna_content([np.nan, -1.0]).s_fraction) and dna_content([np.nan, -1.0]).n == 1
    x, _ = population(0.5, 0.2, 0.3, n=300, seed=1)
    dna = dna_content(x, bins=np.linspace(0, 3, 31))
    assert dna.g1_peak == pytest.approx(5e4, rel=0.05) and dna.counts.shape == (30,)
    assert dna_content([7.0] * 10).g1_peak == pytest.approx(7.0, rel=0.01)


def test_dna_content_reference_finds_a_small_g1_beside_a_strong_arrest():
    x, k = population(0.10, 0.0, 0.90, n=4000, seed=5)
    truth = {"g1": k[0], "g2": k[2]}
    alone = dna_content(x)
    assert alone.g1_fraction > 0.5  # without a reference the G2/M peak is taken for G1 (documented)
    control, _ = population(0.8, 0.0, 0.2, n=4000, seed=6)
    shifted = 1.08 * x  # another well's staining, 8% brighter: G1 is looked for near the reference, not at it
    ref = dna_content(control).g1_peak
    dna = dna_content(shifted, reference=ref)
    assert abs(dna.g1_fraction - truth["g1"]) < 0.02 and abs(dna.g2m_fraction - truth["g2"]) < 0.02
    assert dna.g1_peak == pytest.approx(1.08 * ref, rel=0.03)
