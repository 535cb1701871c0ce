"""The paper's augmentation (mirrors, scaling 0.8-1.2, rotation 0-360 degrees) as one affine warp.

Image and labels are warped by the same affine map straight into a training
crop, so they stay consistent by construction; boxes are then recomputed
from the warped labels (:func:`hts.model.boxes.boxes_from_labels`), which is
exact, where transforming the old boxes would give loose boxes after rotation.
Wider scale ranges are drawn log-uniformly (``AugmentParams.log_scale``); what
varies in intensity between screens is in :mod:`hts.training.photometric`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PAPER_SCALE = (0.8, 1.2)  # the paper's scale range, drawn uniformly


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transform (the paper's values by default).

    Parameters
    ----------
    scale : tuple of float
        Range of the scale factor (content enlarged by ``s``).
    log_scale : bool
        Draw ``s`` log-uniformly (enlarging and shrinking by the same factor
        equally likely: for wide ranges such as 0.5-2); False: uniformly, as
        the paper.
    rotate : bool
        A uniform random angle over 360 degrees.
    mirror : bool
        A random flip of each axis.
    """

    scale: tuple[float, float] = PAPER_SCALE
    rotate: bool = True  # uniform angle over 360 degrees
    mirror: bool = True  # random flip of each axis
    log_scale: bool = False  # log-uniform scale (wide ranges); False: uniform, as the paper


def random_affine(rng: np.random.Generator, params: AugmentParams = AugmentParams()) -> np.ndarray:
    """A random 2x2 matrix mapping crop offsets to source offsets (row, col).

    Scaling ``s`` enlarges the content by ``s`` (the source is sampled with
    step ``1/s``).

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness (reproducible batches).
    params : AugmentParams, optional
        Ranges of scale, rotation and mirroring.

    Returns
    -------
    (2, 2) float64 ndarray
        Rotation @ flip / scale.
    """
    lo, hi = params.scale
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if params.log_scale else rng.uniform(lo, hi)
    a = rng.uniform(0, 2 * np.pi) if params.rotate else 0.0
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    flip = np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0])]) if params.mirror else np.eye(2)
    return rot @ flip / s


def warp_pair(
    image: np.ndarray,
    labels: np.ndarray,
    matrix: np.ndarray,
    center: tuple[float, float],
    crop: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` (linear) and ``labels`` (nearest) into a ``crop``-sized output.

    Output pixel ``o`` samples the source at ``center + matrix @ (o - crop_center)``;
    outside the source both are 0 (background: images are normalised so
    that background is about 0), so image and labels never disagree there.

    Parameters
    ----------
    image : (H, W) float ndarray
        Normalised image.
    labels : (H, W) int ndarray
        Its instance labels.
    matrix : (2, 2) ndarray
        Crop offset to source offset (row, col), e.g. :func:`random_affine`.
    center : tuple of float
        Source point ``(row, col)``, px, that lands on the crop centre.
    crop : tuple of int
        Output ``(h, w)``, px.

    Returns
    -------
    image : (h, w) float32 ndarray
    labels : (h, w) ndarray
        Dtype of ``labels``; instances may be cut or missing, ids not sequential.
    """
    return warp(np.asarray(image, np.float32), matrix, center, crop, order=1), warp(labels, matrix, center, crop, order=0)


def warp(array: np.ndarray, matrix: np.ndarray, center: tuple[float, float], crop: tuple[int, int], order: int) -> np.ndarray:
    """One array of :func:`warp_pair`: spline ``order`` (1 image, 0 labels), 0 outside the source.

    Parameters
    ----------
    array : (H, W) ndarray
        Image or labels.
    matrix, center, crop
        As in :func:`warp_pair`.
    order : int
        Interpolation order.

    Returns
    -------
    (h, w) ndarray
        Dtype of ``array``.
    """
    out_c = (np.asarray(crop, np.float64) - 1) / 2
    offset = np.asarray(center, np.float64) - matrix @ out_c
    return ndimage.affine_transform(array, matrix, offset, output_shape=crop, order=order, mode="constant", cval=0)


def random_geometry(
    rng: np.random.Generator, shape: tuple[int, int], params: AugmentParams | None = AugmentParams(), zoom: float = 1.0
) -> tuple[np.ndarray, tuple[float, float]]:
    """The random ``(matrix, center)`` of :func:`augment` for a source of ``shape`` (its draws, in its order).

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    shape : tuple of int
        Source ``(H, W)``, px.
    params, zoom
        As in :func:`augment`.

    Returns
    -------
    matrix : (2, 2) ndarray
    center : tuple of float
        For :func:`warp_pair`.
    """
    h, w = shape
    center = (rng.uniform(0, h - 1), rng.uniform(0, w - 1))
    matrix = (np.eye(2) if params is None else random_affine(rng, params)) / zoom
    return matrix, center


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    crop: tuple[int, int],
    params: AugmentParams | None = AugmentParams(),
    zoom: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A random augmented ``crop`` of a normalised image and its labels.

    The crop centre is uniform over the source image, so borders are seen
    as often as the middle.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    image : (H, W) float ndarray
        Normalised image.
    labels : (H, W) int ndarray
        Its instance labels.
    crop : tuple of int
        Output ``(h, w)``, px.
    params : AugmentParams or None, optional
        None: a plain random crop (no rotation, scaling or mirror).
    zoom : float, optional
        Enlarges the content on top of the random scaling (brings each
        image's nuclei to the model's canonical diameter).

    Returns
    -------
    image : (h, w) float32 ndarray
    labels : (h, w) ndarray
        As in :func:`warp_pair`.
    """
    matrix, center = random_geometry(rng, labels.shape, params, zoom)
    return warp_pair(image, labels, matrix, center, crop)
