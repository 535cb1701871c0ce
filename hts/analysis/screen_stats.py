"""Screening statistics: assay quality, normalisation, plate-position correction, dose response, DNA content.

Pure functions on numbers, no I/O, no plotting; the standard definitions of
cellHTS2, platetools and phenoScreen (``shared/docs/screening-conventions.md``):
control quality (:func:`z_prime`, :func:`ssmd`), normalisation
(:func:`percent_of_control`, :func:`normalized_percent_inhibition`; the robust
z-score is :func:`hts.analysis.qc.robust_z`), plate-position correction
(:func:`median_polish` as R's ``stats::medpolish``, :func:`b_score`), dose
response (:func:`four_pl`, :func:`fit_four_pl`) and cell-cycle phases from
per-nucleus integrated DNA-stain intensity (:func:`dna_content`). Degenerate
data (too few values, zero spread, a failed fit) give NaN and, where there is
a field for one, a message: bad data does not raise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, optimize, signal, stats

from hts.analysis.qc import MAD_SCALE, MEAN_AD_SCALE

G1_GATE = (0.5, 1.35)  # phase gates on the DNA content r = integrated / G1 peak
S_GATE = (1.35, 1.75)
G2M_GATE = (1.75, 2.6)
REFERENCE_WINDOW = 0.4  # log2 units (x0.76 to x1.32): how far a well's G1 may sit from the reference G1
_NAN2 = (float("nan"), float("nan"))


def _finite(values: ArrayLike) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def z_prime(positive: ArrayLike, negative: ArrayLike) -> float:
    """Z' factor of a plate's controls, ``1 - 3 (sd_pos + sd_neg) / |mean_pos - mean_neg|``.

    Zhang, Chung & Oldenburg (1999), J. Biomol. Screen. 4:67: the separation
    band between the control distributions relative to their dynamic range;
    1 is ideal, > 0.5 an excellent assay, <= 0 controls overlapping at 3 SD.

    Parameters
    ----------
    positive, negative : array_like
        The control wells' values (any shape, flattened); NaN values are ignored.

    Returns
    -------
    float
        NaN when either side has fewer than 2 values (sample SD, ``ddof=1``)
        or the means are equal.
    """
    p, n = _finite(positive), _finite(negative)
    band = abs(p.mean() - n.mean()) if p.size > 1 and n.size > 1 else 0.0
    return float(1.0 - 3.0 * (p.std(ddof=1) + n.std(ddof=1)) / band) if band > 0 else float("nan")


def ssmd(positive: ArrayLike, negative: ArrayLike) -> float:
    """Strictly standardised mean difference, ``(mean_pos - mean_neg) / sqrt(sd_pos^2 + sd_neg^2)``.

    Zhang (2007), Genomics 89:552 (method-of-moments estimate, independent
    groups). Signed: positive when the positive controls are higher.

    Parameters
    ----------
    positive, negative : array_like
        The control wells' values; NaN values are ignored.

    Returns
    -------
    float
        NaN when either side has fewer than 2 values or both SDs (``ddof=1``)
        are 0 (the ratio would be infinite or undefined).
    """
    p, n = _finite(positive), _finite(negative)
    spread = np.hypot(p.std(ddof=1), n.std(ddof=1)) if p.size > 1 and n.size > 1 else 0.0
    return float((p.mean() - n.mean()) / spread) if spread > 0 else float("nan")


def percent_of_control(values: ArrayLike, negative_mean: float):
    """Percent of control, ``100 x values / negative_mean`` (cellHTS2 ``POC``).

    Parameters
    ----------
    values : array_like or pandas.Series
        Raw well values (a pandas object keeps its index).
    negative_mean : float
        Mean of the plate's negative (neutral) controls.

    Returns
    -------
    numpy.ndarray or pandas object
        Same shape; all NaN when ``negative_mean`` is 0 or not finite.
    """
    x = values if hasattr(values, "index") else np.asarray(values, dtype=float)
    return 100.0 * x / negative_mean if np.isfinite(negative_mean) and negative_mean != 0 else x * np.nan


def normalized_percent_inhibition(values: ArrayLike, positive_mean: float, negative_mean: float):
    """Normalised percent inhibition, ``100 x (negative_mean - values) / (negative_mean - positive_mean)``.

    cellHTS2 ``NPI``: 0 at the negative-control mean, 100 at the
    positive-control mean, whichever way the assay signal goes.

    Parameters
    ----------
    values : array_like or pandas.Series
        As for :func:`percent_of_control`.
    positive_mean, negative_mean : float
        Means of the plate's positive and negative controls.

    Returns
    -------
    numpy.ndarray or pandas object
        Same shape; all NaN when the means are equal or not finite.
    """
    x = values if hasattr(values, "index") else np.asarray(values, dtype=float)
    span = negative_mean - positive_mean
    return 100.0 * (negative_mean - x) / span if np.isfinite(span) and span != 0 else x * np.nan


@dataclass
class MedianPolish:
    """Additive fit ``matrix = overall + row[:, None] + column[None, :] + residuals`` (NaN wells stay NaN)."""

    overall: float
    row: np.ndarray  # (R,)
    column: np.ndarray  # (C,)
    residuals: np.ndarray  # (R, C)
    iterations: int
    converged: bool = True  # False when max_iter was reached first

    @property
    def fitted(self) -> np.ndarray:
        """``overall + row + column`` for every well, shape (R, C)."""
        return self.overall + self.row[:, None] + self.column[None, :]


def _row_medians(z: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for an all-NaN row); ``(a + b) / 2`` of the middle pair."""
    if z.shape[1] == 0:
        return np.full(z.shape[0], np.nan)
    s, k = np.sort(z, axis=1), np.count_nonzero(~np.isnan(z), axis=1)  # NaN sorts last
    i = np.arange(z.shape[0])
    return np.where(k > 0, (s[i, np.maximum((k - 1) // 2, 0)] + s[i, k // 2]) / 2, np.nan)


def _median(v: np.ndarray) -> float:
    return float(_row_medians(v.reshape(1, -1))[0])


def median_polish(matrix: ArrayLike, max_iter: int = 10, tol: float = 1e-6) -> MedianPolish:
    """Tukey's two-way median polish of a plate matrix, step for step as R's ``stats::medpolish``.

    Fits ``x[i, j] = overall + row[i] + column[j] + residual[i, j]`` robustly
    (Tukey 1977, *Exploratory Data Analysis*, ch. 11). Each iteration, in the
    order of R's ``medpolish(x, eps=tol, maxiter=max_iter, na.rm=TRUE)``:

    1. subtract each row's median from the residuals, add it to ``row``;
    2. move the median of ``column`` from ``column`` into ``overall``;
    3. subtract each column's median from the residuals, add it to ``column``;
    4. move the median of ``row`` from ``row`` into ``overall``;
    5. stop when the sum of absolute residuals ``S`` is 0 or
       ``|S - S_previous| < tol x S`` (``S_previous`` starts at 0).

    Medians ignore NaN wells (missing, excluded), whose residuals stay NaN;
    an all-NaN row or column gets a NaN effect, as in R. A matrix that is not
    2-D raises ValueError.

    Parameters
    ----------
    matrix : array_like, shape (R, C)
        One plate's values laid out as rows x columns.
    max_iter : int, optional
        At most this many iterations (R's ``maxiter``, default 10 there too).
    tol : float, optional
        Relative tolerance on ``S`` (R's ``eps``, default 0.01 there).

    Returns
    -------
    MedianPolish
    """
    z = np.array(matrix, dtype=float)
    if z.ndim != 2:
        raise ValueError(f"median_polish needs a 2-D matrix, got shape {z.shape}")
    overall, row, col = 0.0, np.zeros(z.shape[0]), np.zeros(z.shape[1])
    old, converged, it = 0.0, False, 0
    for it in range(1, max_iter + 1):
        delta = _row_medians(z)  # 1. row medians
        z, row = z - delta[:, None], row + delta
        shift = _median(col)  # 2.
        col, overall = col - shift, overall + shift
        delta = _row_medians(z.T)  # 3. column medians
        z, col = z - delta[None, :], col + delta
        shift = _median(row)  # 4.
        row, overall = row - shift, overall + shift
        new = float(np.nansum(np.abs(z)))
        converged = new == 0 or abs(new - old) < tol * new
        if converged:
            break
        old = new
    return MedianPolish(float(overall), row, col, z, it, bool(converged))


def b_score(matrix: ArrayLike, max_iter: int = 10, tol: float = 1e-6) -> np.ndarray:
    """B-score of each well: median-polish residuals over ``1.4826 x MAD`` of the plate's residuals.

    Brideau et al. (2003), J. Biomol. Screen. 8:634; cellHTS2 ``Bscore``,
    platetools ``b_score``. :func:`median_polish` removes the row and column
    (position) effects; the residuals, not re-centred, are divided by
    ``MAD_SCALE x median(|res - median(res)|)`` over the non-NaN wells (R's
    ``mad``). When the MAD is 0 (more than half the residuals equal, e.g. an
    exactly additive plate with a few hits) the scale falls back, as in
    :func:`hts.analysis.qc.robust_z`, to ``MEAN_AD_SCALE x`` the mean absolute
    deviation; when that is 0 too every score is 0. Never inf.

    Parameters
    ----------
    matrix : array_like, shape (R, C)
        One plate's values; NaN wells stay NaN.
    max_iter, tol : optional
        Passed to :func:`median_polish`.

    Returns
    -------
    numpy.ndarray, shape (R, C)
    """
    res = median_polish(matrix, max_iter, tol).residuals
    valid = res[~np.isnan(res)]
    if not valid.size:
        return res
    dev = np.abs(valid - np.median(valid))
    scale = MAD_SCALE * np.median(dev)
    if not scale > 0:
        scale = MEAN_AD_SCALE * dev.mean()
    return res / scale if scale > 0 else res * 0.0


def four_pl(dose: ArrayLike, bottom: float, top: float, ec50: float, hill: float) -> np.ndarray:
    """Four-parameter logistic, ``bottom + (top - bottom) / (1 + (dose / ec50) ** hill)``.

    R drc's ``LL.4``. With ``hill > 0`` the response falls from ``top``
    (dose -> 0) to ``bottom`` (dose -> inf), an inhibition curve; ``hill < 0``
    rises from ``bottom`` to ``top``. ``ec50`` (the unit of ``dose``) is the
    dose of the half-way response.

    Parameters
    ----------
    dose : array_like
        Doses (>= 0; 0 gives the dose -> 0 limit).
    bottom, top, ec50, hill : float
        The parameters (``ec50 > 0``).

    Returns
    -------
    numpy.ndarray
        The responses, shaped as ``dose``.
    """
    d = np.asarray(dose, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return bottom + (top - bottom) / (1.0 + (d / ec50) ** hill)


@dataclass
class FourPLFit:
    """A four-parameter logistic fit (:func:`fit_four_pl`); NaNs where there is no estimate."""

    bottom: float
    top: float
    ec50: float
    hill: float
    ec50_ci: tuple[float, float]
    hill_ci: tuple[float, float]
    n: int  # points used
    converged: bool
    message: str = ""

    def predict(self, dose: ArrayLike) -> np.ndarray:
        """The fitted curve at ``dose`` (:func:`four_pl`)."""
        return four_pl(dose, self.bottom, self.top, self.ec50, self.hill)


def fit_four_pl(dose: ArrayLike, response: ArrayLike, level: float = 0.95) -> FourPLFit:
    """Least-squares fit of :func:`four_pl` to a dose-response series, with confidence intervals.

    :func:`scipy.optimize.curve_fit` (Levenberg-Marquardt) in ``(bottom,
    top, log10 EC50, hill)`` on ``log10 dose``: EC50 stays positive and its
    interval ``10 ** (log10 EC50 +- t se)`` is asymmetric, ``se`` from the
    fit's covariance, ``t`` Student's with ``n - 4`` degrees of freedom.
    Starting values: the mean responses at the lowest and highest dose (the
    lower is ``bottom``), ``hill = +1`` for falling data, ``-1`` for rising,
    EC50 the geometric mid dose. Reported with ``bottom <= top`` (swapping
    them and negating ``hill`` is the same curve): ``hill > 0`` is inhibition.

    Non-finite points and doses <= 0 (no log dose) are excluded, named in
    ``message``. Fewer than 5 points (4 parameters + 1 dof) or 4 doses, a
    constant response, a failed fit or an inestimable covariance give
    ``converged=False``.

    Parameters
    ----------
    dose, response : array_like, shape (n,)
        Paired doses (any unit; EC50 comes out in it) and responses;
        replicates are separate points.
    level : float, optional
        Confidence level of ``ec50_ci`` and ``hill_ci``.

    Returns
    -------
    FourPLFit
        ``message`` is ``"ok"`` or the notes joined by ``"; "``.
    """
    d, y = np.asarray(dose, dtype=float).ravel(), np.asarray(response, dtype=float).ravel()
    nan = dict(bottom=np.nan, top=np.nan, ec50=np.nan, hill=np.nan, ec50_ci=_NAN2, hill_ci=_NAN2, converged=False)
    if d.shape != y.shape:
        return FourPLFit(**nan, n=0, message=f"{d.size} doses but {y.size} responses")
    notes = []
    finite = np.isfinite(d) & np.isfinite(y)
    if (~finite).any():
        notes.append(f"{int((~finite).sum())} points with a non-finite dose or response excluded")
    nonpos = finite & (d <= 0)
    if nonpos.any():
        notes.append(f"{int(nonpos.sum())} points with dose <= 0 excluded "
                     f"(doses {', '.join(f'{v:g}' for v in np.unique(d[nonpos]))})")
    x, y = np.log10(d[finite & ~nonpos]), y[finite & ~nonpos]
    n, levels = int(x.size), int(np.unique(x).size)
    if n < 5 or levels < 4 or np.ptp(y) == 0:
        notes.append(f"{n} points at {levels} doses: need at least 5 points at 4 doses for 4 parameters"
                     if n < 5 or levels < 4 else "constant response: no curve to fit")
        return FourPLFit(**nan, n=n, message="; ".join(notes))
    lo, hi = x.min(), x.max()
    y_lo, y_hi = y[x == lo].mean(), y[x == hi].mean()
    start = [*sorted((y_lo, y_hi))] if y_lo != y_hi else [y.min(), y.max()]
    start += [(lo + hi) / 2, 1.0 if y_lo >= y_hi else -1.0]

    def model(xx, b, t, log_ec50, h):
        return b + (t - b) / (1.0 + 10.0 ** (h * (xx - log_ec50)))

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            popt, pcov = optimize.curve_fit(model, x, y, p0=start, maxfev=20000)
    except (RuntimeError, ValueError, FloatingPointError) as exc:
        return FourPLFit(**nan, n=n, message="; ".join(notes + [f"fit failed: {exc}"]))
    b, t, log_ec50, h = (float(v) for v in popt)
    var = np.diag(pcov)
    ok = bool(np.isfinite(popt).all() and np.isfinite(var).all() and (var >= 0).all())
    ec50_ci, hill_ci = _NAN2, _NAN2
    if ok:
        q = float(stats.t.ppf(0.5 + level / 2, n - 4))
        se_e, se_h = np.sqrt(var[2:])
        with np.errstate(over="ignore"):  # an unbounded interval: inf
            ec50_ci = (float(10.0 ** (log_ec50 - q * se_e)), float(10.0 ** (log_ec50 + q * se_e)))
        hill_ci = (h - q * float(se_h), h + q * float(se_h))
        if not lo <= log_ec50 <= hi:
            notes.append("EC50 outside the tested dose range (extrapolated)")
    else:
        notes.append("the covariance could not be estimated (parameters not identifiable from these data)")
    if b > t:  # the same curve, reported with bottom <= top
        b, t, h, hill_ci = t, b, -h, (-hill_ci[1], -hill_ci[0])
    with np.errstate(over="ignore"):
        ec50 = float(10.0 ** log_ec50)
    return FourPLFit(b, t, ec50, h, ec50_ci, hill_ci, n, ok, "; ".join(notes) or "ok")


@dataclass
class DnaContent:
    """Cell-cycle phases from DNA content (:func:`dna_content`); fractions of all ``n`` nuclei."""

    g1_peak: float  # integrated intensity of the G1 mode, the input's unit
    g1_fraction: float
    s_fraction: float
    g2m_fraction: float
    n: int
    edges: np.ndarray = field(repr=False)  # histogram bin edges of r = integrated / g1_peak
    counts: np.ndarray = field(repr=False)  # nuclei per bin


def _g1_mode(log2x: np.ndarray, smooth: float, min_peak_ratio: float, near: float | None = None) -> float:
    """The G1 mode, in log2 units, of a Gaussian-smoothed histogram (see :func:`dna_content`)."""
    lo, hi = np.percentile(log2x, [0.5, 99.5]) + np.array([-4.0, 4.0]) * smooth
    width = max(smooth / 4, (hi - lo) / 10000)
    nb = int(np.ceil((hi - lo) / width))
    counts, edges = np.histogram(log2x, bins=nb, range=(lo, lo + nb * width))
    dens = ndimage.gaussian_filter1d(counts.astype(float), smooth / width, mode="constant")
    peaks, _ = signal.find_peaks(dens, prominence=0.1 * dens.max())
    centres = edges[:-1] + width / 2
    if near is not None:  # the highest maximum within REFERENCE_WINDOW of the reference G1
        window = np.abs(centres - near) <= REFERENCE_WINDOW
        peaks = peaks[window[peaks]]
        p = int(peaks[np.argmax(dens[peaks])]) if peaks.size else \
            int(np.flatnonzero(window)[np.argmax(dens[window])]) if window.any() else int(np.argmax(dens))
    else:
        if not peaks.size:
            peaks = np.array([int(np.argmax(dens))])
        p = int(peaks[dens[peaks] >= min_peak_ratio * dens[peaks].max()][0])  # the lowest tall peak
    offset = 0.0
    if 0 < p < nb - 1:  # vertex of the parabola through the peak bin and its neighbours
        y0, y1, y2 = dens[p - 1:p + 2]
        offset = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if y0 - 2 * y1 + y2 < 0 else 0.0
    return float(edges[p] + (0.5 + offset) * width)


def dna_content(integrated: ArrayLike, bins: int | ArrayLike = 160, smooth: float = 0.04,
                min_peak_ratio: float = 0.25, reference: float | None = None) -> DnaContent:
    """Cell-cycle phase fractions from per-nucleus integrated DNA-stain intensity.

    A stoichiometric DNA stain's integrated intensity (Hoechst, DAPI) is
    proportional to DNA content: G1 at 2N, G2/M at 4N (twice G1), S between
    (Roukos et al. 2015, Nat. Protoc. 10:334).

    G1 peak: the mode of a histogram of ``log2(integrated)`` smoothed with a
    Gaussian of ``smooth`` log2 units (0.04, ~3%, narrower than the 4-10% CV
    of an imaged G1 peak); log2 makes it scale-invariant. Of the maxima with
    a prominence of >= 10% of the highest, G1 is the lowest one at least
    ``min_peak_ratio`` as high as the highest: not the highest, so a
    G2-dominated population (e.g. 70% G2/M) still finds G1, and not any bump,
    so sub-G1 debris is not taken for it. No G2 partner at 2x is required.
    A G1 peak below ``min_peak_ratio`` of the G2 peak (e.g. 10% G1, 80% G2)
    is passed over and G2 taken for G1: lower ``min_peak_ratio`` for such arrests.

    Phases are fixed gates on ``r = integrated / g1_peak``: G1 ``[0.5, 1.35)``,
    S ``[1.35, 1.75)``, G2/M ``[1.75, 2.6)`` (:data:`G1_GATE` etc.; G1's is
    >= 3 SD wide for a G1 CV up to 10%). Early-S nuclei (r < 1.35) count as
    G1 and late-S ones (r >= 1.75) as G2/M, so S is conservative, below a
    model fit's (Dean-Jett-Fox). Nuclei outside every gate (debris, sub-G1,
    polyploid, doublets, values <= 0) are in no phase but count in ``n``.

    Parameters
    ----------
    integrated : array_like
        Integrated DNA-stain intensity of each nucleus (any unit); NaN values
        are dropped (not measured).
    bins : int or array_like, optional
        The histogram of ``r`` returned for plotting: a number of equal bins
        over ``[0, 4]``, or the bin edges.
    smooth : float, optional
        SD of the smoothing Gaussian, log2 units.
    min_peak_ratio : float, optional
        Height relative to the highest peak that the G1 peak must reach.
    reference : float, optional
        The G1 peak of a reference population in the same unit (the plate's
        negative controls: staining is the same across a plate, so G1 does
        not move to 2x in an arrested well). Given, G1 is the highest maximum
        within ``REFERENCE_WINDOW`` log2 units of it, and ``min_peak_ratio``
        is not used: a G1 peak of 10% beside 80% G2/M is still found.

    Returns
    -------
    DnaContent
        NaN peak and fractions for empty input (``n = 0``) or when no value
        is positive.
    """
    x = _finite(integrated)
    edges = np.linspace(0.0, 4.0, int(bins) + 1) if np.ndim(bins) == 0 else np.asarray(bins, dtype=float)
    if not (x > 0).any():
        return DnaContent(np.nan, np.nan, np.nan, np.nan, int(x.size), edges, np.zeros(edges.size - 1, dtype=int))
    near = float(np.log2(reference)) if reference is not None and reference > 0 else None
    g1 = 2.0 ** _g1_mode(np.log2(x[x > 0]), smooth, min_peak_ratio, near)
    r = x / g1
    share = [float(np.count_nonzero((r >= a) & (r < b)) / x.size) for a, b in (G1_GATE, S_GATE, G2M_GATE)]
    return DnaContent(g1, *share, int(x.size), edges, np.histogram(r, bins=edges)[0])
