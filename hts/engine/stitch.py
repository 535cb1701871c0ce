"""Stitching: one label per nucleus across blocks of a large image (numpy in, numpy out).

A large image is cut into blocks; each block is segmented with a halo of
context around it. A nucleus belongs to the block whose *core* holds its
centroid, so every nucleus is kept exactly once. The labels of an output
block are then assembled from the kept nuclei of the block itself and of its
neighbours (a nucleus owned by a neighbour can reach into this block's core);
where two kept nuclei claim a pixel, the block's own nuclei win, then the
neighbours in block order: the result does not depend on execution order.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import ndimage

from hts.errors import HtsError


@dataclass(frozen=True)
class Block:
    """One block: its grid index, core ``[y0, y1) x [x0, x1)`` and halo-padded region."""

    index: tuple[int, int]
    core: tuple[int, int, int, int]
    region: tuple[int, int, int, int]

    @property
    def region_slices(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.region
        return slice(y0, y1), slice(x0, x1)

    @property
    def core_slices(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.core
        return slice(y0, y1), slice(x0, x1)


def block_grid(shape: tuple[int, int], block: int, halo: int) -> dict[tuple[int, int], Block]:
    """Blocks of side ``block`` (the last ones smaller) with ``halo`` px of context, keyed by grid index."""
    if block < 1 or halo < 0:
        raise HtsError(f"block must be >= 1 and halo >= 0 px, got block={block}, halo={halo}")
    h, w = shape
    out = {}
    for i, j in product(range(-(-h // block)), range(-(-w // block))):
        y0, x0 = i * block, j * block
        y1, x1 = min(y0 + block, h), min(x0 + block, w)
        region = (max(y0 - halo, 0), min(y1 + halo, h), max(x0 - halo, 0), min(x1 + halo, w))
        out[(i, j)] = Block((i, j), (y0, y1, x0, x1), region)
    return out


def keep_owned(labels: np.ndarray, block: Block) -> np.ndarray:
    """Labels of ``block.region`` keeping only the nuclei whose centroid lies in ``block.core``.

    Returned as uint32 relabelled 1..n in order of the input ids, so that
    ``n = labels.max()`` is the block's nucleus count.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(labels.shape, np.uint32)
    ids = np.arange(1, n + 1)
    centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, ids)).reshape(-1, 2)
    present = np.bincount(labels.ravel(), minlength=n + 1)[1:] > 0
    ry0, _, rx0, _ = block.region
    y0, y1, x0, x1 = block.core
    cy, cx = centroids[:, 0] + ry0, centroids[:, 1] + rx0
    owned = present & (cy >= y0) & (cy < y1) & (cx >= x0) & (cx < x1)
    lut = np.zeros(n + 1, np.uint32)
    lut[1:][owned] = np.arange(1, int(owned.sum()) + 1, dtype=np.uint32)
    return lut[labels]


def neighbours(index: tuple[int, int], blocks: dict[tuple[int, int], Block]) -> list[tuple[int, int]]:
    """The block itself first, then its existing 8-neighbours in grid order."""
    i, j = index
    around = [(i + di, j + dj) for di, dj in product((-1, 0, 1), repeat=2) if (di, dj) != (0, 0)]
    return [index] + [k for k in around if k in blocks]


def assemble(target: Block, candidates: list[tuple[Block, np.ndarray, int]]) -> np.ndarray:
    """uint32 labels of ``target.core`` from owned labels of neighbouring blocks.

    ``candidates``: ``(block, owned_labels_of_its_region, id_offset)`` in
    priority order (see :func:`neighbours`); a nucleus ``k`` of a block gets
    the global id ``offset + k``. Pixels already claimed keep their label.
    """
    y0, y1, x0, x1 = target.core
    out = np.zeros((y1 - y0, x1 - x0), np.uint32)
    for block, owned, offset in candidates:
        ry0, ry1, rx0, rx1 = block.region
        oy0, oy1, ox0, ox1 = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
        if oy0 >= oy1 or ox0 >= ox1:
            continue
        src = owned[oy0 - ry0 : oy1 - ry0, ox0 - rx0 : ox1 - rx0]
        dst = out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
        free = (dst == 0) & (src > 0)
        dst[free] = src[free] + np.uint32(offset)
    return out


STRIDE = 16  # the network's total downsampling: tile phases repeat every 16 network px


def aligned_blocks(diameter: float | None, canonical: float | None, block: int, halo_network: int) -> tuple[float | None, int, int]:
    """``(diameter, block, halo)`` so that every block region starts on the network's stride grid.

    The network is not exactly shift-invariant: a region resampled from an
    origin that maps to a fraction of the 16 px stride sees different pooling
    phases than the whole image, and its nuclei differ slightly. With the
    diameter rounded to 0.5 px, block side and halo (input px) become
    multiples of ``q = 16 * diameter / canonical`` (made integral), so each
    region origin maps to a multiple of 16 network px, as in a single pass.
    """
    from fractions import Fraction

    if canonical is None or diameter is None:
        d, q = diameter, STRIDE
        factor = 1.0
    else:
        d = max(round(2 * diameter) / 2, 0.5)
        frac = Fraction(STRIDE) * Fraction(d).limit_denominator(2) / Fraction(canonical).limit_denominator(1000)
        q = frac.numerator  # the smallest whole number of px that is a multiple of 16 network px
        factor = canonical / d
    halo = -(-int(np.ceil(halo_network / factor)) // q) * q
    side = -(-max(block, 4 * halo) // q) * q
    return d, side, halo
