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
from hts.model.network import STRIDE


@dataclass(frozen=True)
class Block:
    """One block of the grid (:func:`block_grid`); coordinates in input px of the whole image.

    Attributes
    ----------
    index : tuple of int
        ``(i, j)``: row and column in the grid.
    core : tuple of int
        ``(y0, y1, x0, x1)``: the block proper, ``[y0, y1) x [x0, x1)``; the
        cores partition the image.
    region : tuple of int
        ``(y0, y1, x0, x1)``: the core plus the halo, clipped to the image;
        what is segmented.
    """

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
    """The block grid of an image: the plan of both passes.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``: the image, px.
    block : int
        Core side, px (>= 1); the last row and column of blocks are smaller.
    halo : int
        Context around each core, px (>= 0), clipped at the image border.

    Returns
    -------
    dict
        :class:`Block` by grid index ``(i, j)``, in grid (row-major) order.

    Raises
    ------
    HtsError
        When ``block < 1`` or ``halo < 0``.
    """
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
    """The nuclei a block owns: those whose centroid lies in its core.

    Parameters
    ----------
    labels : numpy.ndarray, shape (h, w), integer
        Labels of ``block.region``, 0 = background.
    block : Block
        The block they were segmented for.

    Returns
    -------
    numpy.ndarray, shape (h, w), uint32
        The owned nuclei relabelled 1..n in order of their input ids (others
        0), so that ``n = max()`` is the block's nucleus count.
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
    """The blocks whose owned nuclei can reach into a block's core.

    Parameters
    ----------
    index : tuple of int
        ``(i, j)``: the block.
    blocks : dict
        The grid (:func:`block_grid`).

    Returns
    -------
    list of tuple of int
        ``index`` first, then its existing 8-neighbours in grid order: the
        priority order of :func:`assemble`.
    """
    i, j = index
    around = [(i + di, j + dj) for di, dj in product((-1, 0, 1), repeat=2) if (di, dj) != (0, 0)]
    return [index] + [k for k in around if k in blocks]


def assemble(target: Block, candidates: list[tuple[Block, np.ndarray, int]]) -> np.ndarray:
    """The global labels of a block's core from the owned labels of its neighbourhood.

    Parameters
    ----------
    target : Block
        The block whose core is assembled.
    candidates : list of (Block, numpy.ndarray, int)
        ``(block, owned, offset)`` in priority order (see :func:`neighbours`):
        ``owned`` (uint32, shape of ``block.region``) from :func:`keep_owned`;
        nucleus ``k`` of a block gets the global id ``offset + k``. Pixels
        already claimed keep their label.

    Returns
    -------
    numpy.ndarray, shape of ``target.core``, uint32
        0 = background.
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


def aligned_blocks(diameter: float | None, canonical: float | None, block: int, halo_network: int) -> tuple[float | None, int, int]:
    """Block side and halo such that every block region starts on the network's stride grid.

    The network is not exactly shift-invariant: a region resampled from an
    origin that maps to a fraction of the 16 px stride sees different pooling
    phases than the whole image, and its nuclei differ slightly. With the
    diameter rounded to 0.5 px, block side and halo (input px) become
    multiples of ``q = 16 * diameter / canonical`` (made integral), so each
    region origin maps to a multiple of 16 network px, as in a single pass.

    Parameters
    ----------
    diameter : float or None
        Median nucleus diameter of the image, px; None: not resampled.
    canonical : float or None
        The model's canonical diameter, px; None: the model does not resample.
    block : int
        Wanted block side, px (input frame).
    halo_network : int
        Wanted halo, network px.

    Returns
    -------
    diameter : float or None
        The diameter rounded to 0.5 px (to be used for every block).
    block : int
        Block side, px: ``block`` (or four halos, if more) rounded up to a
        multiple of ``q``.
    halo : int
        Halo, px: ``halo_network`` in input px rounded up to a multiple of ``q``.
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
