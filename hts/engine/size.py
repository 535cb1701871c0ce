"""Nucleus size from the network itself: segment at a trial scale, measure, rescale, repeat.

The classical estimate (:func:`hts.engine.scale.classical_diameter`) cuts
large textured nuclei into pieces and returns a fraction of their size
(12-30 px for 90-110 px nuclei from another lab), so the image was then
upsampled 4-8x and every nucleus was cut again (+95% nuclei). The network
measures better, but only when it is not zoomed in too far: at a trial
diameter ``d`` far *below* the truth it sees the inside of one nucleus and
cuts it into pieces of about ``d``, so ``measured ~ d`` looks
self-consistent at every small ``d`` (a trap for a fixed-point iteration
started from a low guess). Zoomed *out* (``d`` above the truth) it still
finds whole nuclei and measures their true size, until they shrink to a few
network pixels. Hence the refinement always approaches from above:

1. start at ``max_diameter`` (``MAX_DIAMETER``, 240 px);
2. segment one window of ``WINDOW_NET_PX`` network px (one 448-px tile,
   about 14 trial diameters a side) at the trial diameter, placed where the
   image has the most Otsu foreground, with the trial's size rules;
   measure the median equivalent diameter of the objects, leaving out those
   the window (not the image) cuts;
3. no object, or a measurement over ``MERGED`` times the trial (zoomed out so
   far that touching nuclei fuse): halve the trial; otherwise stop when the
   measurement is within ``TOLERANCE`` of the trial, else take it as the next
   trial (at most halving, at most ``MAX_UP`` upwards);
4. crowded fields can have no such fixed point (the network measures a
   fixed fraction of every trial): then the flattest step of the descent
   gives the size (:func:`_flattest`) and ``converged`` is False.

Every trial costs one tile of the network, whatever the image size; most
images converge in 2-4 trials. ``scripts/size_benchmark.py`` measures the
estimate on validation images resampled 0.5-5x (``docs/size.md``). Plates
take the :func:`consensus` of several fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from hts.engine.pipeline import infer_image, watershed_prediction
from hts.engine.preprocess import (
    check_image,
    float32_view,
    intensity_range,
    normalize,
    otsu_threshold,
)
from hts.engine.scale import rescale
from hts.model import InstanceUNet

MIN_DIAMETER = 4.0  # px: below this no nucleus can be resolved
MAX_DIAMETER = 240.0  # px: the largest trial (nuclei of 10-120 px are the supported range, with margin)
WINDOW_NET_PX = 448  # one tile of the network
TOLERANCE = 0.12  # a trial within 12% of its measurement is the answer
MAX_UP = 1.25  # a measurement above the trial is followed by at most this much
MERGED = 1.5  # a measurement this far above the trial is fused nuclei, not larger ones
MAX_ITER = 8
MIN_OBJECTS = 3  # fewer measured objects: the measurement is taken, but the result is flagged


@dataclass
class SizeEstimate:
    """The outcome of :func:`estimate_diameter`.

    Attributes
    ----------
    diameter : float or None
        Median nucleus diameter in input px; None when no nucleus was found.
    n_objects : int
        Objects measured at the last trial (those not touching the window border).
    trials : list of (float, float or None)
        ``(trial diameter, measured diameter)`` per iteration, in input px.
    start : float
        The first trial (px).
    converged : bool
        False when no trial agreed with its measurement within ``TOLERANCE``;
        ``diameter`` is then taken from the flattest step (:func:`_flattest`).
    """

    diameter: float | None
    n_objects: int = 0
    trials: list[tuple[float, float | None]] = field(default_factory=list)
    start: float = 0.0
    converged: bool = True


class Windows:
    """Square windows of an image placed where it has the most foreground.

    The Otsu foreground of the normalised image and its integral image are
    computed once (one pass over the image); each :meth:`best` is then a
    lookup on a grid of half-window steps, whatever the window size.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The input image.
    value_range : (float, float)
        Its normalisation range.
    """

    def __init__(self, image: np.ndarray, value_range: tuple[float, float]):
        norm = normalize(image, value_range=value_range)
        h, w = self.shape = norm.shape
        try:
            fg = norm > otsu_threshold(norm[:: max(1, h // 512), :: max(1, w // 512)])
        except ValueError:  # a constant image
            fg = np.zeros(norm.shape, bool)
        self._ii = np.pad(fg.cumsum(0, dtype=np.int64).cumsum(1), ((1, 0), (1, 0)))

    def best(self, side: int) -> tuple[slice, slice]:
        """The ``side x side`` window (clipped to the image) with the most foreground; ties go to the centre."""
        (h, w), ii = self.shape, self._ii
        sh, sw = min(side, h), min(side, w)
        ys = np.unique(np.r_[np.arange(0, h - sh + 1, max(1, sh // 2)), h - sh])
        xs = np.unique(np.r_[np.arange(0, w - sw + 1, max(1, sw // 2)), w - sw])
        y, x = np.meshgrid(ys, xs, indexing="ij")
        counts = ii[y + sh, x + sw] - ii[y, x + sw] - ii[y + sh, x] + ii[y, x]
        dist = np.hypot(y + sh / 2 - h / 2, x + sw / 2 - w / 2)
        k = np.lexsort((dist.ravel(), -counts.ravel()))[0]
        y0, x0 = int(y.ravel()[k]), int(x.ravel()[k])
        return slice(y0, y0 + sh), slice(x0, x0 + sw)


def _interior_diameters(labels: np.ndarray, cut: tuple[bool, bool, bool, bool] = (True,) * 4) -> np.ndarray:
    """Equivalent diameters (px) of the objects of ``labels``, leaving out those the window cuts.

    ``cut`` says which window sides (top, bottom, left, right) lie inside
    the image: objects touching them are truncated by the window, not by the
    image, and are left out when at least ``MIN_OBJECTS`` others remain. The
    image's own edges cut nuclei as the annotation does, so they stay.
    """
    lab = np.asarray(labels)
    areas = np.bincount(lab.ravel().astype(np.int64))
    sides = [lab[0], lab[-1], lab[:, 0], lab[:, -1]]
    border = np.unique(np.concatenate([s for s, c in zip(sides, cut) if c] or [np.zeros(1, lab.dtype)]))
    ids = np.flatnonzero(areas)
    ids = ids[ids > 0]
    inner = np.setdiff1d(ids, border)
    keep = inner if inner.size >= MIN_OBJECTS or inner.size >= ids.size else ids
    return 2.0 * np.sqrt(areas[keep] / np.pi)


def _cut_sides(window: tuple[slice, slice], shape: tuple[int, int]) -> tuple[bool, bool, bool, bool]:
    """Which sides (top, bottom, left, right) of ``window`` lie inside an image of ``shape``."""
    (y, x), (h, w) = window, shape
    return y.start > 0, y.stop < h, x.start > 0, x.stop < w


def segment_window(net: InstanceUNet, image: np.ndarray, trial: float, value_range: tuple[float, float],
                   windows: Windows | None = None) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Labels of one window of ``image`` segmented with ``trial`` (px) as the nucleus diameter.

    Parameters
    ----------
    net : InstanceUNet
        The model (its ``config.diameter`` is the canonical size).
    image : ndarray, shape (H, W)
        The input image, any real dtype.
    trial : float
        Trial nucleus diameter in px; the window is ``WINDOW_NET_PX`` network px
        (``WINDOW_NET_PX * trial / canonical`` input px) a side.
    value_range : (float, float)
        Normalisation range of the whole image.
    windows : Windows, optional
        The image's window finder (made here when not given).

    Returns
    -------
    (ndarray of uint32, shape (h', w'), (slice, slice)) or None
        The window's labels in the network's frame (the window resampled by
        ``canonical / trial``: multiply lengths by ``trial / canonical`` for
        input px) and the window's place in ``image``; None when the window is
        under 16 network px a side (nothing can be seen).
    """
    canonical = float(net.config.diameter or 32.0)
    side = round(WINDOW_NET_PX * trial / canonical)
    win = (windows or Windows(image, value_range)).best(side)
    crop, k = float32_view(image[win], max(map(abs, value_range)))  # k != 0: floats beyond float32's range
    value_range = (math.ldexp(value_range[0], -k), math.ldexp(value_range[1], -k))
    if min(crop.shape) * canonical / trial < 16:
        return None
    # Resampled to the network's scale first, so that the watershed too runs on one tile's pixels
    # (its size rules at the canonical diameter are the trial's, scaled).
    small = rescale(crop, canonical / trial)
    labels = watershed_prediction(net, infer_image(net, small, canonical, value_range=value_range), canonical)
    return labels, win


def estimate_diameter(
    net: InstanceUNet,
    image: np.ndarray,
    *,
    start: float | None = None,
    max_diameter: float = MAX_DIAMETER,
) -> SizeEstimate:
    """Median nucleus diameter (px) of ``image`` measured by the network, approached from above.

    Parameters
    ----------
    net : InstanceUNet
        The model that will segment the image.
    image : ndarray, shape (H, W)
        A 2D fluorescence image, any integer or float dtype.
    start : float, optional
        First trial diameter in px (default ``max_diameter``). A start below
        the truth risks the fragmentation trap described in the module.
    max_diameter : float
        The largest trial in px.

    Returns
    -------
    SizeEstimate
        ``diameter`` in input px (None when no nucleus is found down to
        ``MIN_DIAMETER``), the objects measured and the trials taken.
    """
    image = check_image(image)
    value_range = intensity_range(image)
    trial = float(np.clip(max_diameter if start is None else start, MIN_DIAMETER, max_diameter))
    canonical = float(net.config.diameter or 32.0)
    est = SizeEstimate(None, start=trial)
    windows = Windows(image, value_range)
    for _ in range(MAX_ITER):
        seg = segment_window(net, image, trial, value_range, windows)
        diam = (_interior_diameters(seg[0], _cut_sides(seg[1], image.shape)) * trial / canonical if seg is not None
                else np.zeros(0))
        if diam.size == 0:
            est.trials.append((trial, None))
            if trial <= MIN_DIAMETER:
                break
            trial = max(trial / 2, MIN_DIAMETER)
            continue
        measured = float(np.median(diam))
        est.trials.append((trial, measured))
        est.diameter, est.n_objects = measured, int(diam.size)
        if abs(measured / trial - 1) <= TOLERANCE:
            break
        if measured > MERGED * trial:  # zoomed out so far that touching nuclei fuse into blobs: go down
            trial = max(trial / 2, MIN_DIAMETER)
            continue
        trial = float(np.clip(np.clip(measured, trial / 2, trial * MAX_UP), MIN_DIAMETER, max_diameter))
    else:
        est.converged = False
        est.diameter = _flattest(est.trials) or est.diameter
    return est


def _flattest(trials: list[tuple[float, float | None]]) -> float | None:
    """Without a fixed point, the size where the measurement depends least on the trial.

    Crowded fields can have no trial the measurement agrees with: the network
    measures a fixed fraction of every trial. Between two successive trials
    ``d1 > d2`` the slope ``log(m1 / m2) / log(d1 / d2)`` is 0 for nuclei
    measured at their own size and 1 for pieces that follow the trial; the
    geometric mean of the two measurements of the flattest step is returned.
    """
    best, value = np.inf, None
    for (d1, m1), (d2, m2) in pairwise(trials):
        if m1 is None or m2 is None or d1 <= d2 * 1.05 or min(m1, m2) < MIN_DIAMETER:
            continue
        slope = np.log(m1 / m2) / np.log(d1 / d2)
        if 0 <= slope < best:
            best, value = slope, float(np.sqrt(m1 * m2))
    return value


@dataclass
class Consensus:
    """A plate's diameter from several fields' estimates.

    Attributes
    ----------
    diameter : float or None
        Median of the fields' estimates (px); None when no field had nuclei.
    per_field : dict of str to float or None
        Each field's estimate (px).
    spread : float
        Median absolute relative deviation of the field estimates from the consensus.
    outliers : list of str
        Fields whose estimate differs from the consensus by more than ``tolerance``.
    """

    diameter: float | None
    per_field: dict[str, float | None]
    spread: float
    outliers: list[str]


def consensus(per_field: dict[str, float | None], tolerance: float = 0.25) -> Consensus:
    """One diameter from the estimates of several fields (median), with their spread and the outliers.

    Parameters
    ----------
    per_field : dict of str to float or None
        Field key -> estimated diameter in px (None: no nuclei found there).
    tolerance : float
        Relative difference from the consensus above which a field is an outlier.

    Returns
    -------
    Consensus
    """
    values = np.array([v for v in per_field.values() if v is not None], float)
    if values.size == 0:
        return Consensus(None, dict(per_field), 0.0, [])
    d = float(np.median(values))
    rel = {k: abs(v / d - 1) for k, v in per_field.items() if v is not None}
    spread = float(np.median(list(rel.values())))
    return Consensus(d, dict(per_field), spread, sorted(k for k, r in rel.items() if r > tolerance))


__all__ = ["Consensus", "SizeEstimate", "Windows", "consensus", "estimate_diameter", "segment_window"]
