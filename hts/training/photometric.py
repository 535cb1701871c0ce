"""Photometric augmentation: what varies between screens besides geometry (issue 15).

Each transform is a small numpy function with its parameters given
explicitly; :func:`random_photometric` draws them (:class:`PhotometricParams`)
and chains them in the order a microscope does:

1. the specimen signal: gamma, nucleus-to-background contrast;
2. optics: defocus blur, smooth illumination shading and additive background,
   bright debris and saturating blobs (on background pixels only: they are
   not nuclei and stay unlabelled);
3. the camera: Poisson (shot) and Gaussian (read) noise, gain and baseline
   offset, clipping at full scale (saturation) and rounding to 8, 12 or 16
   bits, and lossy JPEG export (8 bits);
4. :func:`hts.engine.preprocess.normalize`, exactly as inference does.

So the network sees what inference gives it: a gain or offset change is
removed by the normalisation as on a real screen and matters only where it
really does (clipping, quantisation, noise), and saturated pixels and debris
are handled by the normalisation's own rules. The input is a normalised
image (background about 0, bright nuclei about 1), the unit of the signal.
Transforms never change labels (:func:`photometric_crop` warps them exactly
as :func:`hts.training.augment.augment` does). Sizes are in canonical px (at
the network's input scale) and converted with the image's ``zoom``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from hts.engine.preprocess import normalize
from hts.training.augment import AugmentParams, random_geometry, warp

PAPER_GEOMETRY = AugmentParams()  # the paper's mirror, scale and rotation


@dataclass(frozen=True)
class PhotometricParams:
    """Probabilities (``p_*``, per crop) and ranges of :func:`random_photometric`.

    Ranges are drawn uniformly unless marked log-uniform; brightness is in
    units of a bright nucleus (1.0), sizes in canonical px. See
    docs/augmentation.md for what each one simulates and why its range.
    ``p_any`` is the share of crops perturbed at all (the others are the
    plain crops, so clean data stays in the mix).
    """

    p_any: float = 0.8
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.5, 2.0)  # log-uniform exponent (dye and export nonlinearity)
    p_contrast: float = 0.5
    contrast: tuple[float, float] = (0.4, 1.0)  # nucleus share c: background (1 - c), nucleus/background >= 1.67
    p_blur: float = 0.3
    blur: tuple[float, float] = (0.0, 2.5)  # defocus, Gaussian sigma, canonical px
    p_shading: float = 0.5
    shading: tuple[float, float] = (0.0, 0.4)  # largest relative illumination change over the field
    p_background: float = 0.5
    background: tuple[float, float] = (0.0, 0.5)  # smooth additive background (haze, autofluorescence)
    p_debris: float = 0.25
    debris: tuple[float, float] = (1.0, 8.0)  # mean blobs per 256 x 256 canonical px
    debris_radius: tuple[float, float] = (1.0, 5.0)  # canonical px
    debris_brightness: tuple[float, float] = (2.0, 20.0)  # log-uniform
    p_saturated: float = 0.15
    saturated: tuple[float, float] = (0.25, 1.5)  # mean blobs per 256 x 256 canonical px, driven past full scale
    saturated_radius: tuple[float, float] = (3.0, 12.0)  # canonical px
    p_noise: float = 0.5
    photons: tuple[float, float] = (20.0, 2000.0)  # log-uniform photo-electrons of a bright nucleus
    read_noise: tuple[float, float] = (0.0, 0.05)  # Gaussian sigma
    level: tuple[float, float] = (0.05, 1.5)  # log-uniform bright nucleus / full scale (> 1: nuclei saturate)
    offset: tuple[float, float] = (0.0, 0.1)  # camera baseline, fraction of full scale
    bits: tuple[int, ...] = (8, 12, 16)  # camera / file bit depth, one at random
    p_jpeg: float = 0.2
    jpeg_quality: tuple[int, int] = (20, 95)  # lossy export (forces 8 bits)
    context: float = 512.0  # canonical px: side of the field perturbed and normalised with a crop


def adjust_intensity(image: np.ndarray, gain: float = 1.0, offset: float = 0.0, gamma: float = 1.0,
                     contrast: float = 1.0) -> np.ndarray:
    """``offset + gain * ((1 - contrast) + contrast * image ** gamma)``.

    Parameters
    ----------
    image : ndarray
        Signal (background 0, bright nucleus 1); clipped at 0 before a gamma other than 1.
    gain, offset : float, optional
        Linear camera response (the percentile normalisation removes them
        unless clipping, rounding or noise intervene).
    gamma : float, optional
        Exponent, > 0: above 1 dims faint nuclei, below 1 lifts them and the background.
    contrast : float, optional
        In (0, 1]: nuclei stay at 1, background rises to ``1 - contrast``.

    Returns
    -------
    float32 ndarray
        Shape of ``image``.
    """
    x = np.asarray(image, np.float32)
    if gamma != 1.0:
        x = np.maximum(x, 0) ** np.float32(gamma)
    return (np.float32(offset) + np.float32(gain) * (np.float32(1 - contrast) + np.float32(contrast) * x)).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], waves: int = 3) -> np.ndarray:
    """A random smooth field in [-1, 1]: a few plane waves of under one cycle per field.

    Parameters
    ----------
    rng : numpy.random.Generator
        Directions, frequencies (0-0.75 cycles per side), phases, amplitudes.
    shape : tuple of int
        ``(H, W)``.
    waves : int, optional
        Plane waves summed.

    Returns
    -------
    (H, W) float32 ndarray
        Largest absolute value 1 (0 everywhere for a flat draw).
    """
    h, w = shape
    y, x = np.arange(h, dtype=np.float32) / max(h, w), np.arange(w, dtype=np.float32) / max(h, w)
    field = np.zeros(shape, np.float32)
    for _ in range(waves):
        angle, freq, phase = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.75), rng.uniform(0, 2 * np.pi)
        ay, ax = 2 * np.pi * freq * np.sin(angle) * y, 2 * np.pi * freq * np.cos(angle) * x + phase
        # cos(a + b) as outer products: cheap and exact
        field += np.float32(rng.uniform(0.2, 1.0)) * (np.outer(np.cos(ay), np.cos(ax)) - np.outer(np.sin(ay), np.sin(ax)))
    field -= field.mean()
    top = np.abs(field).max()
    return field / top if top > 0 else field


def shade(image: np.ndarray, illumination: np.ndarray | float = 1.0, background: np.ndarray | float = 0.0) -> np.ndarray:
    """``image * illumination + background``: uneven illumination and an additive background.

    Parameters
    ----------
    image : ndarray
        Signal.
    illumination, background : ndarray or float, optional
        E.g. ``1 + a * smooth_field(...)`` with ``a`` in 0-0.4, and a level 0-0.5 times a positive smooth field.

    Returns
    -------
    float32 ndarray
    """
    return (np.asarray(image, np.float32) * illumination + background).astype(np.float32)


def defocus(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px (0: a copy), the low-order approximation of defocus.

    Parameters
    ----------
    image : ndarray
        Signal.
    sigma : float
        px, >= 0 (range used: 0-2.5 canonical px).

    Returns
    -------
    float32 ndarray
    """
    x = np.asarray(image, np.float32)
    return ndimage.gaussian_filter(x, sigma, mode="reflect") if sigma > 0 else x.copy()


def poisson_gaussian(rng: np.random.Generator, image: np.ndarray, photons: float, read_noise: float = 0.0) -> np.ndarray:
    """Shot noise of ``photons`` photo-electrons per unit signal plus Gaussian read noise, in signal units.

    Parameters
    ----------
    rng : numpy.random.Generator
        The noise.
    image : ndarray
        Signal, >= 0 (negative values count as 0 photons).
    photons : float
        Photo-electrons of signal 1: its shot-noise SNR is ``sqrt(photons)`` (range used: 20-2000).
    read_noise : float, optional
        Sigma of the added Gaussian noise, signal units (range used: 0-0.05).

    Returns
    -------
    float32 ndarray
        Mean ``image`` (where >= 0).
    """
    x = rng.poisson(np.maximum(np.asarray(image, np.float64), 0) * photons) / photons
    if read_noise > 0:
        x = x + rng.normal(0.0, read_noise, x.shape)
    return x.astype(np.float32)


def add_blobs(rng: np.random.Generator, image: np.ndarray, count: int, radius: tuple[float, float],
              brightness: tuple[float, float], mask: np.ndarray | None = None, flat: bool = False) -> np.ndarray:
    """``count`` elongated blobs (debris, dust, fluorescent clumps) added where ``mask`` allows.

    Blob centres lie more than two radii from any pixel outside ``mask``, and
    blobs are cut to ``mask``, so labelled nuclei are never touched.

    Parameters
    ----------
    rng : numpy.random.Generator
        Positions, radii, aspect ratios (1-2), angles, brightness (log-uniform).
    image : (H, W) ndarray
        Signal.
    count : int
        Blobs wanted (fewer where ``mask`` leaves no room).
    radius : tuple of float
        px.
    brightness : tuple of float
        Peak added, signal units.
    mask : (H, W) bool ndarray, optional
        Where blobs may be (the background); None: everywhere.
    flat : bool, optional
        A disk with a soft edge (driven past full scale: saturated), else a Gaussian (sigma half the radius).

    Returns
    -------
    (H, W) float32 ndarray
    """
    out = np.array(image, np.float32)
    h, w = out.shape
    room = np.full(out.shape, np.inf) if mask is None or mask.all() else ndimage.distance_transform_edt(mask)
    for _ in range(count):
        r = rng.uniform(*radius)
        where = np.flatnonzero(room.ravel() > 2 * r)
        if where.size == 0:
            continue
        cy, cx = divmod(int(where[rng.integers(where.size)]), w)
        aspect, angle = rng.uniform(1.0, 2.0), rng.uniform(0, np.pi)
        peak = np.exp(rng.uniform(*np.log(brightness)))
        ext = int(np.ceil(3 * r))
        y0, y1, x0, x1 = max(cy - ext, 0), min(cy + ext + 1, h), max(cx - ext, 0), min(cx + ext + 1, w)
        dy, dx = np.ogrid[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
        u, v = dy * np.cos(angle) + dx * np.sin(angle), -dy * np.sin(angle) + dx * np.cos(angle)
        d = np.sqrt((u / aspect) ** 2 + (v * aspect) ** 2)
        blob = 1 / (1 + np.exp(np.minimum((d - r) / 0.7, 50))) if flat else np.exp(-2 * (d / r) ** 2)
        if mask is not None:
            blob = blob * mask[y0:y1, x0:x1]
        out[y0:y1, x0:x1] += (peak * blob).astype(np.float32)
    return out


def quantize(image: np.ndarray, bits: int) -> np.ndarray:
    """Camera values: rounded and clipped to ``[0, 2**bits - 1]`` (full scale: saturation).

    Parameters
    ----------
    image : ndarray
        Intensities in camera units (after :func:`adjust_intensity`'s gain and offset).
    bits : int
        8 (uint8), 12 or 16 (uint16).

    Returns
    -------
    uint8 or uint16 ndarray
    """
    full = 2 ** bits - 1
    return np.clip(np.rint(image), 0, full).astype(np.uint8 if bits <= 8 else np.uint16)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip (Pillow) at ``quality`` (range used: 20-95), as lossy 8-bit exports.

    Parameters
    ----------
    image : (H, W) ndarray
        8-bit values (other dtypes are rounded and clipped to 0-255 first).
    quality : int
        1-95.

    Returns
    -------
    (H, W) ndarray
        Dtype of ``image``.
    """
    arr = np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue()))).astype(arr.dtype)


def _loguniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))


def random_photometric(rng: np.random.Generator, image: np.ndarray, params: PhotometricParams = PhotometricParams(),
                       *, mask: np.ndarray | None = None, zoom: float = 1.0) -> np.ndarray:
    """``image`` as a random screen would have recorded it, normalised as inference normalises.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    image : (H, W) float ndarray
        Normalised (:func:`hts.engine.preprocess.normalize`): background about 0, bright nuclei about 1.
    params : PhotometricParams, optional
        Probabilities and ranges.
    mask : (H, W) bool ndarray, optional
        Where debris may go: the unlabelled pixels (None: anywhere).
    zoom : float, optional
        Canonical px per px of ``image`` (see :func:`hts.training.train.zoom_factors`).

    Returns
    -------
    (H, W) float32 ndarray
        Normalised again.
    """
    p = params

    def on(probability: float) -> bool:
        return rng.random() < probability

    x = np.maximum(np.asarray(image, np.float32), 0)
    x = adjust_intensity(x, gamma=_loguniform(rng, p.gamma) if on(p.p_gamma) else 1.0,
                         contrast=rng.uniform(*p.contrast) if on(p.p_contrast) else 1.0)
    if on(p.p_blur):
        x = defocus(x, rng.uniform(*p.blur) / zoom)
    illumination = 1 + rng.uniform(*p.shading) * smooth_field(rng, x.shape) if on(p.p_shading) else 1.0
    background = rng.uniform(*p.background) * (1 + 0.5 * smooth_field(rng, x.shape)) if on(p.p_background) else 0.0
    x = shade(x, illumination, background)
    area = x.size * zoom**2 / 256**2  # in 256 x 256 canonical px
    level = _loguniform(rng, p.level)
    if on(p.p_debris):
        x = add_blobs(rng, x, rng.poisson(rng.uniform(*p.debris) * area), tuple(np.divide(p.debris_radius, zoom)),
                      p.debris_brightness, mask)
    if on(p.p_saturated):
        past = 3.0 / level  # three times full scale
        x = add_blobs(rng, x, rng.poisson(rng.uniform(*p.saturated) * area), tuple(np.divide(p.saturated_radius, zoom)),
                      (past, 2 * past), mask, flat=True)
    if on(p.p_noise):
        x = poisson_gaussian(rng, x, _loguniform(rng, p.photons), rng.uniform(*p.read_noise))
    lossy = on(p.p_jpeg)
    bits = 8 if lossy else int(rng.choice(p.bits))
    full = 2**bits - 1
    raw = quantize(adjust_intensity(x, gain=level * full, offset=rng.uniform(*p.offset) * full), bits)
    if lossy:
        raw = jpeg(raw, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))
    return normalize(raw)


def source_window(shape: tuple[int, int], matrix: np.ndarray, center: tuple[float, float], crop: tuple[int, int],
                  margin: float, side: float) -> tuple[slice, slice]:
    """The part of a source of ``shape`` a crop samples, grown by ``margin`` and to at least ``side`` px, clipped.

    Parameters
    ----------
    shape : tuple of int
        Source ``(H, W)``.
    matrix, center, crop
        As in :func:`hts.training.augment.warp_pair`.
    margin : float
        px around the sampled footprint (interpolation, blur).
    side : float
        Smallest side, px (the context the normalisation sees).

    Returns
    -------
    tuple of slice
        Rows and columns.
    """
    out_c = (np.asarray(crop, np.float64) - 1) / 2
    corners = np.array([[0, 0], [0, crop[1] - 1], [crop[0] - 1, 0], [crop[0] - 1, crop[1] - 1]], np.float64) - out_c
    pts = np.asarray(center, np.float64) + corners @ matrix.T
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, side / 2)
    start = np.clip(np.floor(mid - half), 0, shape).astype(int)
    stop = np.clip(np.ceil(mid + half) + 1, 0, shape).astype(int)
    return slice(start[0], stop[0]), slice(start[1], stop[1])


def photometric_crop(rng: np.random.Generator, photo_rng: np.random.Generator, image: np.ndarray, labels: np.ndarray,
                     crop: tuple[int, int], params: AugmentParams | None = PAPER_GEOMETRY, zoom: float = 1.0,
                     photometric: PhotometricParams = PhotometricParams()) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hts.training.augment.augment` with :func:`random_photometric` on the field around the crop.

    The geometry takes the same draws from ``rng`` as ``augment``, and the
    labels are warped as there, so they equal ``augment``'s for the same
    ``rng``; the photometric draws come from ``photo_rng``. The perturbed
    field is the source around the crop's footprint, at least
    ``photometric.context`` canonical px (the whole image when smaller), at
    the source's own resolution, like a field at inference. With
    probability ``1 - photometric.p_any`` the crop is ``augment``'s.

    Parameters
    ----------
    rng : numpy.random.Generator
        Geometry.
    photo_rng : numpy.random.Generator
        Photometric perturbations.
    image, labels, crop, params, zoom
        As in :func:`hts.training.augment.augment`.
    photometric : PhotometricParams, optional
        Probabilities and ranges.

    Returns
    -------
    image : (h, w) float32 ndarray
    labels : (h, w) ndarray
    """
    matrix, center = random_geometry(rng, labels.shape, params, zoom)
    lab = warp(labels, matrix, center, crop, order=0)
    if photo_rng.random() >= photometric.p_any:
        return warp(np.asarray(image, np.float32), matrix, center, crop, order=1), lab
    rows, cols = source_window(labels.shape, matrix, center, crop, 2 + 4 * photometric.blur[1] / zoom,
                               photometric.context / zoom)
    field = random_photometric(photo_rng, image[rows, cols], photometric, mask=labels[rows, cols] == 0, zoom=zoom)
    return warp(field, matrix, (center[0] - rows.start, center[1] - cols.start), crop, order=1), lab
