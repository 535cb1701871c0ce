"""Synthetic time-lapse and z-stack OME-Zarr plates with known truth, for ``hts run --t all`` and ``--z all``.

Both are HCS plates like :func:`hts.synthetic.plate.write_plate` writes (uint16, ``omero`` channels, two
pyramid levels halved in ``y, x`` only, truth labels at ``labels/truth`` with the image's axes without
``c``), chunked one ``(y, x)`` plane per chunk.

Time-lapse (:func:`write_timelapse`): axes ``t, c, z, y, x`` with one z-plane, so the truth labels are
``(t, z, y, x)`` like hts's label volumes of ``tczyx`` images; the ``t`` scale is ``dt_h`` hours;
channels ``DAPI`` (+ ``GFP``, as in :mod:`hts.synthetic.plate`). Well ``w`` (row by row) doubles every
``doubling_h[w % len(doubling_h)]`` hours (``inf``: no growth): ``round(n0 * 2 ** (t * dt_h / Td))``
nuclei per field at time point ``t``. A field is one final image with enough nuclei for the last time
point (:func:`hts.synthetic.nuclei.generate`, easy appearance) whose nuclei appear in a random order:
time point ``t`` shows the first ``count(t)`` and renders the others (and their blur) as background,
with fresh Poisson noise. Nuclei neither move nor leave: a nucleus keeps its label (its rank of
appearance) and its pixels from the time point it appears on.

Z-stack (:func:`write_zstack`): axes ``c, z, y, x``, channel ``DAPI``, truth labels ``(z, y, x)``.
Nuclei are ellipsoids (semi-axes ``semi_z`` planes, ``semi_xy`` px, turned in ``xy``) that share no
voxel; a share ``stacked_fraction`` of them lies above or below an earlier one, overlapping it in
``xy``, so a maximum projection merges such pairs. Intensity falls off from each nucleus' centre plane
(and a little towards its rim), is blurred (``blur`` sigmas in z and xy) and Poisson noisy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import zarr
from ome_zarr.writer import write_image, write_labels
from scipy import ndimage

from hts.errors import HtsError
from hts.io.ngff_meta import FORMATS
from hts.io.ngff_write import stamp_version
from hts.synthetic.nuclei import SyntheticConfig, _check_range, _is_int, generate
from hts.synthetic.plate import TRUTH, WINDOW, _plate_root, _two_channels, read_truth
from hts.synthetic.screen import _BLUR_REACH, _EASY, _PHOTONS

__all__ = ["TimelapseSpec", "TimelapseTruth", "ZStackSpec", "ZStackTruth", "read_truth_volume",
           "write_timelapse", "write_zstack"]

_BACKGROUND = 100.0  # ADU, DAPI background (the camera offset of nuclei.generate)
_SIGNAL = 3000.0  # ADU above background of a full-brightness nucleus
_COLORS = {"DAPI": "0000FF", "GFP": "00FF00"}
_XY = ({"y": 2, "x": 2},)  # one level below full resolution, halved in y and x only (never t, c or z)
_MAX_COVER = 0.6  # largest share of a field the last time point's nuclei may cover
_TRIES = 200  # candidate positions per z-stack nucleus


def _check_common(spec: TimelapseSpec | ZStackSpec, limits: dict[str, tuple[int, int]]) -> None:
    """Validate a spec's NGFF version, layout and the integer fields in ``limits`` (inclusive ranges)."""
    if spec.version not in FORMATS:
        raise HtsError(f"version must be one of {', '.join(FORMATS)}, got {spec.version!r}")
    for name, (lo, hi) in {"rows": (1, 26), "columns": (1, 48), "fields": (1, 99), "size": (64, 4096),
                           "seed": (0, 2**40), **limits}.items():
        value = getattr(spec, name)
        if not (_is_int(value) and lo <= value <= hi):
            raise HtsError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class TimelapseSpec:
    """Layout, growth and appearance of a synthetic time-lapse plate (see the module docstring).

    Parameters
    ----------
    rows, columns, fields, size : int
        Plate layout (up to 26 x 48 wells), fields per well, field side (px).
    timepoints, dt_h, n0 : int, float, int
        Number of time points, the hours between them, nuclei per field at ``t = 0``.
    doubling_h : tuple of float
        Doubling times (h, > 0; ``math.inf``: no growth), taken by the wells row by row in turn.
    diameter, gfp : float, bool
        Median nucleus diameter (px); write a ``GFP`` channel after ``DAPI``.
    version, seed : str, int
        NGFF version (``"0.4"`` or ``"0.5"``). Field ``f`` of well ``w`` is generated with seed
        ``seed * 100000 + w * 100 + f``; its order of appearance and noise from ``(seed, w, f)``.
    """

    rows: int = 2
    columns: int = 2
    fields: int = 1
    size: int = 192
    timepoints: int = 6
    dt_h: float = 4.0
    n0: int = 25
    doubling_h: tuple[float, ...] = (16.0, 24.0, 48.0, math.inf)
    diameter: float = 20.0
    gfp: bool = True
    version: str = "0.4"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self, {"timepoints": (1, 1000), "n0": (0, 10_000)})
        _check_range("dt_h", self.dt_h, 1e-6, 1e4)
        _check_range("diameter", self.diameter, 4.0, 100.0)
        d = self.doubling_h
        if not (isinstance(d, tuple) and d and all(isinstance(v, (int, float)) and v > 0 for v in d)):
            raise HtsError(f"doubling_h must be a non-empty tuple of numbers > 0 (or inf), got {d!r}")
        peak = max(self.count(w, self.timepoints - 1) for w in range(len(d)))
        if peak * math.pi * self.diameter**2 / 4 > _MAX_COVER * self.size**2:
            raise HtsError(f"{peak} nuclei of {self.diameter:g} px at the last time point cover more than "
                           f"{_MAX_COVER:.0%} of a {self.size} px field: use fewer time points, slower "
                           "growth or larger fields")

    def doubling_time(self, well: int) -> float:
        """The doubling time (h) of the ``well``-th well, row by row (0-based)."""
        return float(self.doubling_h[well % len(self.doubling_h)])

    def count(self, well: int, t: int) -> int:
        """The designed nuclei per field of the ``well``-th well at time point ``t``: ``round(n0 * 2**(t dt / Td))``."""
        return round(self.n0 * 2 ** (t * self.dt_h / self.doubling_time(well)))


@dataclass(frozen=True)
class TimelapseTruth:
    """What :func:`write_timelapse` put in the plate.

    Attributes
    ----------
    counts : pandas.DataFrame
        One row per well, field and time point: ``well`` (``"B/3"``), ``field`` (int), ``t`` (time point
        index), ``time_h`` and ``n_nuclei`` (the labels of ``labels/truth`` at ``t``).
    doubling_time_h : dict of str to float
        Each well's doubling time, h (``inf`` for a well that does not grow).
    spec : TimelapseSpec
        The specification the plate was written from.
    """

    counts: pd.DataFrame
    doubling_time_h: dict[str, float]
    spec: TimelapseSpec


@dataclass(frozen=True)
class ZStackSpec:
    """Layout and appearance of a synthetic z-stack plate (see the module docstring).

    Parameters
    ----------
    rows, columns, fields, size : int
        Plate layout, fields per well, field side (px).
    planes, n_nuclei : int
        z-planes per field; most nuclei per field (each draws its count from ``[0.75 n_nuclei, n_nuclei]``).
    stacked_fraction : float
        Share of the nuclei placed above or below an earlier one, overlapping it in ``xy``.
    semi_z, semi_xy : tuple of float
        Ranges of the ellipsoids' semi-axes: in planes along z, in px in xy (major axis; the minor is 75-100% of it).
    blur : tuple of float
        Gaussian blur sigmas in z (planes) and xy (px).
    version, seed : str, int
        NGFF version (``"0.4"`` or ``"0.5"``). Field ``f`` of well ``w`` (row by row) is drawn from ``(seed, w, f)``.
    """

    rows: int = 1
    columns: int = 1
    fields: int = 2
    size: int = 192
    planes: int = 16
    n_nuclei: int = 24
    stacked_fraction: float = 0.35
    semi_z: tuple[float, float] = (3.0, 4.0)
    semi_xy: tuple[float, float] = (8.0, 12.0)
    blur: tuple[float, float] = (0.7, 1.0)
    version: str = "0.5"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self, {"planes": (4, 512), "n_nuclei": (0, 10_000)})
        _check_range("stacked_fraction", self.stacked_fraction, 0.0, 1.0)
        for name, lo, hi in (("semi_z", 1.0, self.planes / 2), ("semi_xy", 2.0, self.size / 4)):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 2 and lo <= v[0] <= v[1] <= hi):
                raise HtsError(f"{name} must be a tuple (low, high) with {lo:g} <= low <= high <= {hi:g}, got {v!r}")
        if not (isinstance(self.blur, tuple) and len(self.blur) == 2):
            raise HtsError(f"blur must be a tuple (sigma_z, sigma_xy), got {self.blur!r}")
        for name, sigma in zip(("blur[0]", "blur[1]"), self.blur):
            _check_range(name, sigma, 0.0, 10.0)


@dataclass(frozen=True)
class ZStackTruth:
    """What :func:`write_zstack` put in the plate.

    Attributes
    ----------
    counts : pandas.DataFrame
        One row per well and field: ``well`` (``"B/3"``), ``field`` (int) and ``n_nuclei``
        (3D nuclei, labels ``1..n_nuclei`` of ``labels/truth``).
    spec : ZStackSpec
        The specification the plate was written from.
    """

    counts: pd.DataFrame
    spec: ZStackSpec


def _write_image(group: zarr.Group, image: np.ndarray, labels: np.ndarray, axes: str, channels: tuple[str, ...],
                 fmt, scale: dict[str, float] | None = None, units: dict[str, str] | None = None) -> None:
    """Write one field (image and ``labels/truth``), two levels halved in ``y, x``, one plane per chunk."""
    lead, label_axes, scale = (1,) * (image.ndim - 2), axes.replace("c", ""), scale or {}
    omero = {"channels": [{"label": c, "color": _COLORS[c], "active": True, "window": WINDOW} for c in channels]}
    write_image(image, group, axes=axes, fmt=fmt, scale_factors=list(_XY), axes_units=units,
                scale={a: scale.get(a, 1.0) for a in axes},
                storage_options={"chunks": lead + image.shape[-2:]}, omero=omero)
    write_labels(labels, group, name=TRUTH, axes=label_axes, fmt=fmt, scaler=None, scale_factors=list(_XY),
                 axes_units=units, scale={a: scale.get(a, 1.0) for a in label_axes},
                 storage_options={"chunks": lead[1:] + labels.shape[-2:]})
    stamp_version(group["labels"], fmt)


def _generate_at_least(cfg: SyntheticConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`generate` with at least ``n`` labels: more nuclei are asked for while some end up hidden."""
    ask, cap = n, cfg.shape[0] * cfg.shape[1] // 16
    while True:
        raw, labels = generate(replace(cfg, n_nuclei=ask), seed=seed)
        if labels.max() >= n:
            return raw, labels
        if ask >= cap:
            raise HtsError(f"cannot fit {n} visible nuclei in a {cfg.shape} field")
        ask = min(cap, ask + n - int(labels.max()))


def _template(raw: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background-free nucleus signal of a near noise-free :func:`generate` image, and each pixel's nearest label.

    The signal (1 at a full-brightness nucleus) is kept within the PSF's reach of a nucleus, so hiding a
    nucleus' label (``nearest``) hides its blur tail too.
    """
    dist, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    far = dist > _BLUR_REACH
    background = float(raw[far].mean()) if far.any() else float(np.percentile(raw, 1))
    template = np.clip((raw - background) / _PHOTONS, 0.0, None)
    template[far] = 0.0
    return template, labels[idx[0], idx[1]]


def _appearance(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of appearance of the nuclei of ``labels``: rank (1 = first) by label, 0 for the background.

    :func:`generate` draws later nuclei (higher labels) over earlier ones, so of two touching nuclei the
    lower label may be cut by the higher: it appears only after it, so that no nucleus ever shows a cut
    edge where no neighbour is yet.
    """
    n = int(labels.max())
    a, b = (np.concatenate([x.ravel() for x in side]).astype(np.int64) for side in zip(  # 8-neighbour pairs
        (labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:]), (labels[:-1, :-1], labels[1:, 1:]),
        (labels[:-1, 1:], labels[1:, :-1])))
    touch = (a > 0) & (b > 0) & (a != b)
    edges = np.unique(np.stack([np.maximum(a, b)[touch], np.minimum(a, b)[touch]], axis=1), axis=0)
    waiting = np.bincount(edges[:, 1], minlength=n + 1)  # touching higher labels not yet shown
    below: dict[int, list[int]] = {}
    for hi, lo in edges.tolist():
        below.setdefault(hi, []).append(lo)
    ready = [i for i in range(1, n + 1) if waiting[i] == 0]
    rank = np.zeros(n + 1, np.int64)
    for k in range(1, n + 1):
        j = int(rng.integers(len(ready)))
        ready[j], ready[-1] = ready[-1], ready[j]
        label = ready.pop()
        rank[label] = k
        for lo in below.get(label, ()):
            waiting[lo] -= 1
            if waiting[lo] == 0:
                ready.append(lo)
    return rank


def _timelapse_field(spec: TimelapseSpec, w: int, f: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One field of the ``w``-th well: ``(T, C, 1, H, W)`` image, ``(T, 1, H, W)`` truth labels, count per t."""
    counts = [spec.count(w, t) for t in range(spec.timepoints)]
    cfg = SyntheticConfig(shape=(spec.size, spec.size), diameter=spec.diameter, photons=_PHOTONS, **_EASY)
    raw, final = _generate_at_least(cfg, max(counts), spec.seed * 100_000 + w * 100 + f)
    rng = np.random.default_rng((spec.seed, w, f))
    rank = _appearance(final, rng)
    template, nearest = _template(raw, final) if final.any() else (np.zeros(final.shape), final)
    images, labels = [], []
    for n in counts:
        shown = np.where(rank <= n, rank, 0).astype(np.uint32)  # final label -> label at t (0: not there yet)
        lab = shown[final]
        dapi = np.clip(rng.poisson(_BACKGROUND + _SIGNAL * template * (shown[nearest] > 0)), 0, 65535).astype(np.uint16)
        images.append(_two_channels(dapi, lab, rng) if spec.gfp else dapi[None])
        labels.append(lab)
    return np.stack(images)[:, :, None], np.stack(labels)[:, None], counts


def write_timelapse(path: str | os.PathLike, spec: TimelapseSpec = TimelapseSpec()) -> TimelapseTruth:
    """Write a synthetic time-lapse plate (axes ``t, c, z, y, x``, z = 1) with truth labels ``(t, z, y, x)``.

    Parameters
    ----------
    path : str or os.PathLike
        The plate's Zarr folder (overwritten).
    spec : TimelapseSpec, optional
        Layout, time points, growth per well, appearance, NGFF version and seed.

    Returns
    -------
    TimelapseTruth
        Counts per well, field and time point, and each well's doubling time.
    """
    fmt = FORMATS[spec.version]()
    root, wells = _plate_root(path, spec.rows, spec.columns, spec.fields, fmt, "hts synthetic time-lapse")
    channels = ("DAPI", "GFP") if spec.gfp else ("DAPI",)
    rows = []
    for w, well in enumerate(wells):
        for f in range(spec.fields):
            image, labels, counts = _timelapse_field(spec, w, f)
            _write_image(root[well].require_group(str(f)), image, labels, "tczyx", channels, fmt,
                         scale={"t": float(spec.dt_h)}, units={"t": "hour"})
            rows += [(well, f, t, t * spec.dt_h, n) for t, n in enumerate(counts)]
    counts = pd.DataFrame(rows, columns=["well", "field", "t", "time_h", "n_nuclei"])
    return TimelapseTruth(counts, {well: spec.doubling_time(w) for w, well in enumerate(wells)}, spec)


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, axes: np.ndarray,
               theta: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """The bounding box in a ``(Z, H, W)`` volume of an ellipsoid centred in it, and its squared normalised radius.

    ``axes`` are the semi-axes ``(z, major, minor)``, the major one turned by ``theta`` in ``xy``;
    the radius is below 1 inside.
    """
    box = [slice(max(0, math.floor(c - r)), min(n, math.ceil(c + r) + 1))
           for c, r, n in zip(centre, (axes[0], axes[1], axes[1]), shape)]
    dz, dy, dx = (np.arange(s.start, s.stop) - c for s, c in zip(box, centre))
    dz, dy, dx = dz[:, None, None], dy[None, :, None], dx[None, None, :]
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = dy * math.cos(theta) - dx * math.sin(theta)
    return tuple(box), (dz / axes[0]) ** 2 + (u / axes[1]) ** 2 + (v / axes[2]) ** 2


def _zstack_field(spec: ZStackSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One field: ``(1, Z, H, W)`` DAPI image and ``(Z, H, W)`` truth labels of disjoint ellipsoids."""
    shape = (spec.planes, spec.size, spec.size)
    n = int(rng.integers(round(0.75 * spec.n_nuclei), spec.n_nuclei + 1))
    labels = np.zeros(shape, np.uint32)
    signal = np.zeros(shape, np.float32)
    placed: list[tuple[np.ndarray, float]] = []  # centre (z, y, x) and z semi-axis of each nucleus
    for i in range(n):
        for _ in range(_TRIES):
            a = rng.uniform(*spec.semi_xy)
            axes = np.array([rng.uniform(*spec.semi_z), a, a * rng.uniform(0.75, 1.0)])
            theta = rng.uniform(0, math.pi)
            if placed and rng.random() < spec.stacked_fraction:  # above or below an earlier one, shifted in xy
                (cz, cy, cx), rz = placed[int(rng.integers(len(placed)))]
                up = 1.0 if cz < (spec.planes - 1) / 2 else -1.0
                phi, shift = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.8) * a
                centre = np.array([cz + up * (rz + axes[0] + rng.uniform(0.5, 2.0)),
                                   cy + shift * math.sin(phi), cx + shift * math.cos(phi)])
            else:
                centre = rng.uniform((1.5, 0, 0), (spec.planes - 2.5, spec.size, spec.size))
            if not all(0 <= c <= n - 1 for c, n in zip(centre, shape)):  # its centre voxel is in the volume
                continue
            box, q = _ellipsoid(shape, centre, axes, theta)
            inside = q <= 1.0
            if not labels[box][inside].any():  # no shared voxel
                break
        else:
            raise HtsError(f"cannot place {n} disjoint nuclei in a {shape} field: fewer nuclei or a larger field")
        labels[box][inside] = i + 1
        dz2 = ((np.arange(box[0].start, box[0].stop) - centre[0]) / axes[0])[:, None, None] ** 2
        level = rng.uniform(0.5, 1.0) * (1.0 - 0.6 * dz2) * (1.0 - 0.2 * (q - dz2))  # dims off-centre, towards the rim
        signal[box][inside] = np.broadcast_to(level, q.shape)[inside]
        placed.append((centre, float(axes[0])))
    signal = ndimage.gaussian_filter(signal, (spec.blur[0], spec.blur[1], spec.blur[1]))
    image = np.clip(rng.poisson(_BACKGROUND + _SIGNAL * signal), 0, 65535).astype(np.uint16)
    return image[None], labels


def write_zstack(path: str | os.PathLike, spec: ZStackSpec = ZStackSpec()) -> ZStackTruth:
    """Write a synthetic z-stack plate (axes ``c, z, y, x``) with 3D truth labels ``(z, y, x)``.

    Parameters
    ----------
    path : str or os.PathLike
        The plate's Zarr folder (overwritten).
    spec : ZStackSpec, optional
        Layout, planes, nuclei, NGFF version and seed.

    Returns
    -------
    ZStackTruth
        The 3D nucleus count of every field.
    """
    fmt = FORMATS[spec.version]()
    root, wells = _plate_root(path, spec.rows, spec.columns, spec.fields, fmt, "hts synthetic z-stack")
    rows = []
    for w, well in enumerate(wells):
        for f in range(spec.fields):
            image, labels = _zstack_field(spec, np.random.default_rng((spec.seed, w, f)))
            _write_image(root[well].require_group(str(f)), image, labels, "czyx", ("DAPI",), fmt)
            rows.append((well, f, int(labels.max())))
    return ZStackTruth(pd.DataFrame(rows, columns=["well", "field", "n_nuclei"]), spec)


def read_truth_volume(path: str | os.PathLike, image_path: str) -> np.ndarray:
    """The full truth label array (level 0, every axis) of a field written here or by :mod:`hts.synthetic.plate`.

    Parameters
    ----------
    path : str or os.PathLike
        The plate Zarr.
    image_path : str
        The field inside it, e.g. ``"B/3/0"``.

    Returns
    -------
    uint32 ndarray
        ``(t, z, y, x)`` for a time-lapse field, ``(z, y, x)`` for a z-stack field.
    """
    return read_truth(path, image_path)
