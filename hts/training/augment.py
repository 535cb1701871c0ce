"""The paper's augmentation (mirrors, scaling 0.8-1.2, rotation 0-360 degrees) as one affine warp.

Image and labels are warped by the same affine map straight into a training
crop, so they stay consistent by construction; boxes are then recomputed
from the warped labels (:func:`hts.model.boxes.boxes_from_labels`), which is
exact, where transforming the old boxes would give loose boxes after rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transform (the paper's values by default)."""

    scale: tuple[float, float] = (0.8, 1.2)
    rotate: bool = True  # uniform angle over 360 degrees
    mirror: bool = True  # random flip of each axis


def random_affine(rng: np.random.Generator, params: AugmentParams = AugmentParams()) -> np.ndarray:
    """A random 2x2 matrix mapping crop offsets to source offsets (row, col).

    Scaling ``s`` enlarges the content by ``s`` (the source is sampled with
    step ``1/s``).
    """
    s = rng.uniform(*params.scale)
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
    """
    out_c = (np.asarray(crop, np.float64) - 1) / 2
    offset = np.asarray(center, np.float64) - matrix @ out_c
    img = ndimage.affine_transform(np.asarray(image, np.float32), matrix, offset, output_shape=crop, order=1, mode="constant", cval=0.0)
    lab = ndimage.affine_transform(labels, matrix, offset, output_shape=crop, order=0, mode="constant", cval=0)
    return img, lab


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    crop: tuple[int, int],
    params: AugmentParams | None = AugmentParams(),
    zoom: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A random augmented ``crop`` of a normalised image and its labels.

    ``zoom`` enlarges the content on top of the random scaling (used to bring
    each image's nuclei to the model's canonical diameter).

    The crop centre is uniform over the source image (so borders are seen
    as often as the middle); ``params=None`` gives
    a plain random crop (no rotation, scaling or mirror).
    """
    h, w = labels.shape
    center = (rng.uniform(0, h - 1), rng.uniform(0, w - 1))
    matrix = (np.eye(2) if params is None else random_affine(rng, params)) / zoom
    return warp_pair(image, labels, matrix, center, crop)
