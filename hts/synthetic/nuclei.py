"""Seeded synthetic fluorescence nucleus images with exact instance ground truth.

Stands in for DAPI/Hoechst images like the DSB2018 fluorescence set: dark
background, bright textured nuclei of ~10-40 px diameter, dense clusters of
touching nuclei, debris, uneven illumination, blur and photon noise. The same
``(config, seed)`` always yields bit-identical output (one local
``np.random.Generator``; the global RNG is never used).

Pipeline: shapes -> placement (clusters, then scattered) -> per-nucleus drawing
in a bounding window (later nuclei occlude earlier ones) -> ground-truth
cleanup -> debris -> Gaussian PSF -> illumination -> background -> Poisson and
read noise -> dtype conversion.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hts.errors import HtsError

__all__ = ["SyntheticConfig", "generate", "generate_dataset", "true_count"]

_DTYPES = ("uint8", "uint16", "float32")
_SEED_TAG = 0x4E5543  # mixed into every seed so streams differ from other users of (seed,)
_MIN_FRAGMENT = 15  # px; visible pieces smaller than this are merged away
_HARMONICS = np.arange(2, 7)  # radial harmonics perturbing the ellipse boundary
_LUT = 256  # angular samples of the boundary perturbation
_UINT16_OFFSET = 100.0  # camera offset in ADU
_UINT16_GAIN = 4.0  # ADU per photon (reduced when photons is huge to avoid clipping)


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of one synthetic image; validated on construction.

    ``density`` is in nuclei per px^2 (0.001 = ~65 nuclei in 256x256, about
    30% area coverage at the default 20 px diameter); it is used only when
    ``n_nuclei`` is None. Intensities are relative to ``photons``: a nucleus of
    brightness 1.0 has an expected peak of ``photons`` photon counts.
    """

    shape: tuple[int, int] = (256, 256)
    n_nuclei: int | None = None  # None: round(density * H * W)
    density: float = 0.001  # nuclei per px^2
    diameter: float = 20.0  # median equivalent nucleus diameter, px
    diameter_spread: float = 0.25  # sigma of log(diameter)
    cluster_fraction: float = 0.35  # fraction of nuclei placed in touching clusters
    irregularity: float = 0.15  # boundary perturbation amplitude (0 = ellipses)
    blur_sigma: float = 1.0  # px, Gaussian PSF sigma
    illumination: float = 0.3  # relative amplitude of smooth multiplicative shading
    photons: float = 200.0  # expected photon count at a full-brightness nucleus peak
    read_noise: float = 2.0  # Gaussian read-noise std, photons
    debris: int | None = None  # non-nucleus objects; None: ~4 per 256x256 (Poisson)
    dtype: str = "uint16"  # uint8, uint16 or float32

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (also run on construction and before generating).

        Raises
        ------
        HtsError
            Naming the first bad field and its allowed range.
        """
        shape = self.shape
        if not (isinstance(shape, tuple) and len(shape) == 2 and all(
            _is_int(s) and s >= 16 for s in shape
        )):
            raise HtsError(f"shape must be a tuple of two ints >= 16, got {shape!r}")
        if shape[0] * shape[1] > 2**28:
            raise HtsError(f"shape {shape!r} too large (max 2**28 pixels)")
        n_max = shape[0] * shape[1] // 16
        nn = self.n_nuclei
        if nn is not None and not (_is_int(nn) and 0 <= nn <= n_max):
            raise HtsError(f"n_nuclei must be None or an int in [0, H*W/16], got {self.n_nuclei!r}")
        _check_range("density", self.density, 0.0, 0.05)
        _check_range("diameter", self.diameter, 4.0, 200.0)
        _check_range("diameter_spread", self.diameter_spread, 0.0, 1.0)
        _check_range("cluster_fraction", self.cluster_fraction, 0.0, 1.0)
        _check_range("irregularity", self.irregularity, 0.0, 0.5)
        _check_range("blur_sigma", self.blur_sigma, 0.0, 20.0)
        _check_range("illumination", self.illumination, 0.0, 0.95)
        _check_range("photons", self.photons, 1.0, 1e6)
        _check_range("read_noise", self.read_noise, 0.0, 1e4)
        if self.debris is not None and not (_is_int(self.debris) and self.debris >= 0):
            raise HtsError(f"debris must be None or an int >= 0, got {self.debris!r}")
        if self.dtype not in _DTYPES:
            raise HtsError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_range(name: str, value: object, lo: float, hi: float) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not lo <= float(value) <= hi:
        raise HtsError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")


def _check_seed(seed: object) -> int:
    if not _is_int(seed) or operator.index(seed) < 0:  # type: ignore[arg-type]
        raise HtsError(f"seed must be an int >= 0, got {seed!r}")
    return operator.index(seed)  # type: ignore[arg-type]


def generate(
    config: SyntheticConfig = SyntheticConfig(), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic fluorescence image and its exact instance labels.

    Parameters
    ----------
    config : SyntheticConfig, optional
        Shape, density, sizes, noise and dtype.
    seed : int, optional
        >= 0; the same ``(config, seed)`` gives bit-identical output.

    Returns
    -------
    image : (H, W) ndarray of ``config.dtype``
        float32 in photon units; uint16 as camera ADU = 100 + 4 * photons
        (gain lowered above 10^4 photons to avoid clipping); uint8 scaled so a
        full-brightness nucleus is near 170, clipped to 0-255.
    labels : (H, W) uint32 ndarray
        0 = background, nuclei 1..N sequential, each one 8-connected component
        of >= 15 px^2, exactly the visible nucleus pixels.
    """
    return _generate(config, (_check_seed(seed),))


def generate_dataset(
    n: int, config: SyntheticConfig = SyntheticConfig(), seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` images and label maps from one configuration.

    Parameters
    ----------
    n : int
        >= 0.
    config : SyntheticConfig, optional
        Shared by all images.
    seed : int, optional
        Image i is seeded from ``(seed, i)``, so a prefix of a larger set is the same.

    Returns
    -------
    images, labels : list of (H, W) ndarray
        As in :func:`generate`.
    """
    if not _is_int(n) or n < 0:
        raise HtsError(f"n must be an int >= 0, got {n!r}")
    seed = _check_seed(seed)
    pairs = [_generate(config, (seed, i)) for i in range(int(n))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def true_count(labels: np.ndarray) -> int:
    """Number of distinct nonzero labels in an integer label map.

    Parameters
    ----------
    labels : int ndarray
        Any shape, non-negative.

    Returns
    -------
    int
    """
    lab = np.asarray(labels)
    if lab.size == 0:
        return 0
    return int(np.count_nonzero(np.bincount(lab.ravel().astype(np.int64))[1:]))


def _generate(config: SyntheticConfig, entropy: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    config.validate()
    rng = np.random.default_rng((_SEED_TAG, *entropy))
    h, w = config.shape
    n = config.n_nuclei if config.n_nuclei is not None else int(round(config.density * h * w))

    shapes = _random_shapes(rng, n, config)
    centers = _place(rng, shapes, config)
    canvas, labels = _draw_nuclei(rng, shapes, centers, config)
    labels = _clean_labels(labels, canvas)

    n_debris = config.debris if config.debris is not None else rng.poisson(4.0 * h * w / 65536)
    _draw_debris(rng, canvas, labels, int(n_debris))

    if config.blur_sigma > 0:
        canvas = ndimage.gaussian_filter(canvas, config.blur_sigma, mode="reflect", truncate=3.0)
    canvas *= _illumination(rng, (h, w), config.illumination)
    canvas += np.float32(rng.uniform(0.02, 0.06))  # dim background (autofluorescence, stray light)
    canvas *= np.float32(config.photons)
    np.maximum(canvas, 0, out=canvas)
    counts = rng.poisson(canvas).astype(np.float32)
    if config.read_noise > 0:
        counts += np.float32(config.read_noise) * rng.standard_normal((h, w), dtype=np.float32)
    return _to_dtype(counts, config), labels


def _random_shapes(
    rng: np.random.Generator, n: int, cfg: SyntheticConfig
) -> dict[str, np.ndarray]:
    """Per-nucleus geometry and appearance parameters, drawn as arrays of length n."""
    d = cfg.diameter * np.exp(cfg.diameter_spread * rng.standard_normal(n))
    d = np.clip(d, 0.5 * cfg.diameter, 2.0 * cfg.diameter)
    aspect = rng.uniform(1.0, 1.8, n)
    k = _HARMONICS
    amp = cfg.irregularity * np.abs(rng.standard_normal((n, k.size))) * (1.0 / k)
    phase = rng.uniform(0, 2 * np.pi, (n, k.size))
    psi = np.linspace(-np.pi, np.pi, _LUT, endpoint=False)
    lut = np.einsum("nk,nkl->nl", amp, np.cos(k[None, :, None] * psi + phase[:, :, None]))
    lut = np.maximum(1.0 + lut, 0.5)  # radial factor (1 + h(psi)), kept positive
    return {
        "a": d / 2 * np.sqrt(aspect),  # semi-major axis, px
        "b": d / 2 / np.sqrt(aspect),  # semi-minor axis, px
        "r": d / 2,  # equivalent radius, px
        "theta": rng.uniform(0, np.pi, n),
        "lut": lut.astype(np.float32),
        "bright": rng.uniform(0.4, 1.0, n),
        "falloff": rng.uniform(0.2, 0.4, n),  # relative intensity drop at the edge
        "texture": rng.uniform(0.06, 0.2, n),
        "nucleoli": rng.integers(0, 3, n),
        "nuc_pos": rng.uniform(0, 1, (n, 2, 2)),
        "nuc_sigma": rng.uniform(0.06, 0.12, (n, 2)),
        "nuc_depth": rng.uniform(0.15, 0.35, (n, 2)),
    }


def _boundary_radius(s: dict[str, np.ndarray], i: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Boundary distance (px) of nuclei ``i`` from their centres along world angles ``phi``."""
    psi = phi - s["theta"][i]
    ell = 1.0 / np.hypot(np.cos(psi) / s["a"][i], np.sin(psi) / s["b"][i])
    idx = (np.mod(psi + np.pi, 2 * np.pi) * (_LUT / (2 * np.pi))).astype(np.int64) % _LUT
    return ell * s["lut"][i, idx]


def _place(
    rng: np.random.Generator, shapes: dict[str, np.ndarray], cfg: SyntheticConfig
) -> np.ndarray:
    """Centres (n, 2) as (y, x) px: clustered nuclei first, then scattered ones.

    Cluster members sit at 85-97% of the summed boundary radii from an anchor
    member (slight overlap, so they touch); scattered nuclei take the first of
    12 random candidates clearing all others by 1.1x the summed radii (else
    the best one). A uniform grid keeps neighbour checks O(1) per nucleus.
    """
    h, w = cfg.shape
    r = shapes["r"]
    n = r.size
    centers = np.zeros((n, 2))
    if n == 0:
        return centers
    cell = 2.2 * float(r.max()) + 1e-9
    grid: dict[tuple[int, int], list[int]] = {}
    tries = 12

    def add(i: int, c: np.ndarray) -> None:
        centers[i] = c
        grid.setdefault((int(c[0] // cell), int(c[1] // cell)), []).append(i)

    def clearance(i: int, cand: np.ndarray) -> np.ndarray:
        """Per candidate: min over placed neighbours of distance / (r_k + r_i)."""
        cells = {(int(y // cell), int(x // cell)) for y, x in cand}
        keys = {(cy + dy, cx + dx) for cy, cx in cells for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
        near = [k for key in keys for k in grid.get(key, ())]
        if not near:
            return np.full(len(cand), np.inf)
        idx = np.asarray(near)
        dist = np.sqrt(((cand[:, None, :] - centers[idx][None]) ** 2).sum(axis=2))
        return (dist / (r[idx][None, :] + r[i])).min(axis=1)

    def scatter(i: int) -> None:
        cand = rng.uniform((0, 0), (h, w), (tries, 2))
        clear = clearance(i, cand)
        ok = np.flatnonzero(clear >= 1.1)
        add(i, cand[ok[0] if ok.size else int(np.argmax(clear))])

    m = 0  # nuclei placed so far
    n_cluster = int(round(cfg.cluster_fraction * n))
    while m < n_cluster:
        size = min(int(rng.integers(3, 9)), n_cluster - m)
        members = [m]
        add(m, rng.uniform((0, 0), (h, w)))
        m += 1
        for _ in range(size - 1):
            i = m
            anchors = rng.choice(np.asarray(members), tries)
            phi = rng.uniform(0, 2 * np.pi, tries)
            gap = _boundary_radius(shapes, anchors, phi) + _boundary_radius(
                shapes, np.full(tries, i), phi + np.pi
            )
            dist = gap * rng.uniform(0.85, 0.97, tries)  # slight overlap -> touching
            cand = centers[anchors] + dist[:, None] * np.stack([np.sin(phi), np.cos(phi)], axis=1)
            inside = (cand[:, 0] >= 0) & (cand[:, 0] < h) & (cand[:, 1] >= 0) & (cand[:, 1] < w)
            ok = np.flatnonzero(inside & (clearance(i, cand) >= 0.6))
            if ok.size:
                add(i, cand[ok[0]])
                members.append(i)
            else:
                scatter(i)
            m += 1
    while m < n:
        scatter(m)
        m += 1
    return centers


def _chromatin(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Full-image chromatin texture, ~unit std: smoothed noise plus bright/dark spots."""
    field = rng.standard_normal(shape, dtype=np.float32)
    n_spots = shape[0] * shape[1] // 60
    ys = rng.integers(0, shape[0], n_spots)
    xs = rng.integers(0, shape[1], n_spots)
    amp = rng.uniform(3.0, 6.0, n_spots) * np.where(rng.random(n_spots) < 0.75, 1.0, -1.0)
    np.add.at(field, (ys, xs), amp.astype(np.float32))
    field = ndimage.gaussian_filter(field, 1.0, mode="wrap", truncate=3.0)
    field *= np.float32(2.0 * math.sqrt(math.pi))  # smoothed white noise -> unit std
    return field


def _draw_nuclei(
    rng: np.random.Generator, s: dict[str, np.ndarray], centers: np.ndarray, cfg: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Draw nuclei in order into a float32 signal canvas and an int64 label map."""
    h, w = cfg.shape
    canvas = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.int64)
    if centers.shape[0] == 0:
        return canvas, labels
    tex = _chromatin(rng, (h, w))
    scale = _LUT / (2 * np.pi)
    for i in range(centers.shape[0]):
        cy, cx = centers[i]
        a, b, theta = s["a"][i], s["b"][i], s["theta"][i]
        lut = s["lut"][i]
        rad = a * float(lut.max()) + 1.0
        y0, y1 = max(0, int(cy - rad)), min(h, int(cy + rad) + 2)
        x0, x1 = max(0, int(cx - rad)), min(w, int(cx + rad) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1) - cy)[:, None]
        dx = (np.arange(x0, x1) - cx)[None, :]
        ct, st = math.cos(theta), math.sin(theta)
        u = dx * ct + dy * st
        v = dy * ct - dx * st
        q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        idx = ((np.arctan2(v, u) + np.pi) * scale).astype(np.int64) % _LUT
        t = q / lut[idx]  # 0 at centre, 1 on the boundary
        inside = t <= 1.0
        if not inside.any():
            continue
        val = s["bright"][i] * (1.0 - s["falloff"][i] * t**3)
        val *= 1.0 + s["texture"][i] * tex[y0:y1, x0:x1]
        for j in range(int(s["nucleoli"][i])):  # darker nucleoli, separable Gaussians
            pr = 0.5 * s["nuc_pos"][i, j, 0] * b
            pa = 2 * np.pi * s["nuc_pos"][i, j, 1]
            sig2 = 2.0 * (s["nuc_sigma"][i, j] * 2 * s["r"][i]) ** 2
            gy = np.exp(-((dy - pr * math.sin(pa)) ** 2) / sig2)
            gx = np.exp(-((dx - pr * math.cos(pa)) ** 2) / sig2)
            val *= 1.0 - s["nuc_depth"][i, j] * (gy * gx)
        np.maximum(val, 0.0, out=val)
        canvas[y0:y1, x0:x1][inside] = val[inside]
        labels[y0:y1, x0:x1][inside] = i + 1
    return canvas, labels


def _clean_labels(labels: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """Keep each label's largest 8-connected piece (if >= 15 px), merge the rest.

    Discarded pieces join the touching label they share most border with; a
    piece touching no label becomes background and is erased from ``canvas``
    too, so image and ground truth agree. Returns sequential uint32 labels.
    """
    st8 = np.ones((3, 3), bool)
    discard = np.zeros(labels.shape, bool)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == i
        cc, k = ndimage.label(mask, st8)
        sizes = np.bincount(cc.ravel())
        sizes[0] = 0
        best = int(np.argmax(sizes))
        if k == 1 and sizes[best] >= _MIN_FRAGMENT:
            continue
        keep = cc == best if sizes[best] >= _MIN_FRAGMENT else np.zeros_like(mask)
        discard[sl] |= mask & ~keep
    if discard.any():
        labels[discard] = 0
        pieces, _ = ndimage.label(discard, st8)
        for j, sl in enumerate(ndimage.find_objects(pieces), start=1):
            grown = tuple(slice(max(0, x.start - 1), x.stop + 1) for x in sl)
            piece = pieces[grown] == j
            ring = ndimage.binary_dilation(piece, st8) & ~piece
            near = labels[grown][ring]
            near = near[near > 0]
            if near.size:
                vals, counts = np.unique(near, return_counts=True)
                labels[grown][piece] = vals[np.argmax(counts)]
            else:
                canvas[grown][piece] = 0.0
    present = np.bincount(labels.ravel())
    present[0] = 0
    lut = np.zeros(present.size, np.uint32)
    nz = present > 0
    lut[nz] = np.arange(1, int(nz.sum()) + 1, dtype=np.uint32)
    return lut[labels]


def _draw_debris(
    rng: np.random.Generator, canvas: np.ndarray, labels: np.ndarray, count: int
) -> None:
    """Add specks (bright), fibres and blobs (dim) to canvas, preferably on background."""
    h, w = canvas.shape
    for _ in range(count):
        pts = rng.uniform((0, 0), (h, w), (5, 2))
        free = labels[pts[:, 0].astype(int), pts[:, 1].astype(int)] == 0
        cy, cx = pts[int(np.argmax(free))]
        kind = rng.random()
        if kind < 0.5:  # bright speck: small Gaussian spot
            sigma, amp = rng.uniform(0.6, 1.5), rng.uniform(0.6, 2.0)
        elif kind < 0.75:  # dim fibre: smooth random curve, ~1-2 px wide
            length, amp = rng.uniform(15, 60), rng.uniform(0.08, 0.25)
            steps = int(length * 2)
            heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.06, steps))
            ys = cy + 0.5 * np.cumsum(np.sin(heading))
            xs = cx + 0.5 * np.cumsum(np.cos(heading))
            for off in (0.0, 0.7):
                yi = np.round(ys + off * np.cos(heading)).astype(int)
                xi = np.round(xs - off * np.sin(heading)).astype(int)
                ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
                canvas[yi[ok], xi[ok]] = np.maximum(canvas[yi[ok], xi[ok]], amp)
            continue
        else:  # dim out-of-focus blob
            sigma, amp = rng.uniform(2.0, 5.0), rng.uniform(0.08, 0.2)
        rad = 3.0 * sigma + 1.0
        y0, y1 = max(0, int(cy - rad)), min(h, int(cy + rad) + 2)
        x0, x1 = max(0, int(cx - rad)), min(w, int(cx + rad) + 2)
        gy = np.exp(-((np.arange(y0, y1) - cy) ** 2) / (2 * sigma**2))[:, None]
        gx = np.exp(-((np.arange(x0, x1) - cx) ** 2) / (2 * sigma**2))[None, :]
        canvas[y0:y1, x0:x1] += (amp * gy * gx).astype(np.float32)


def _illumination(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """Smooth multiplicative shading field (H, W) float32 in [1 - amp, 1 + amp]."""
    h, w = shape
    if amplitude == 0:
        return np.ones(shape, np.float32)
    y = np.arange(h, dtype=np.float64) / max(h, w)
    x = np.arange(w, dtype=np.float64) / max(h, w)
    field = np.zeros(shape, np.float64)
    for _ in range(3):  # separable low-frequency cosines, < ~1 cycle per image
        fy, fx = rng.uniform(0.2, 1.0, 2) * 2 * np.pi
        py, px = rng.uniform(0, 2 * np.pi, 2)
        field += rng.normal() * np.cos(fy * y + py)[:, None] * np.cos(fx * x + px)[None, :]
    field -= field.mean()
    peak = np.abs(field).max()
    if peak > 0:
        field *= amplitude / peak
    return (1.0 + field).astype(np.float32)


def _to_dtype(counts: np.ndarray, cfg: SyntheticConfig) -> np.ndarray:
    """Photon counts (float32) -> output dtype (see ``generate``)."""
    if cfg.dtype == "float32":
        return counts
    if cfg.dtype == "uint16":
        gain = min(_UINT16_GAIN, 40000.0 / cfg.photons)
        out = np.rint(_UINT16_OFFSET + gain * counts)
        return np.clip(out, 0, 65535).astype(np.uint16)
    out = np.rint(counts * (255.0 / (1.5 * cfg.photons)))
    return np.clip(out, 0, 255).astype(np.uint8)
