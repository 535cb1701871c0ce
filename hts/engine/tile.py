"""Tiling geometry: overlapping 448x448 tiles, blending weights and tile ownership.

Pure numpy, no model (only its stride, :data:`hts.model.network.STRIDE`):
:func:`hts.engine.infer.predict` runs the network on the tiles described here. Lengths are in pixels of the network's input frame
(after resampling to the canonical nucleus diameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hts.errors import HtsError
from hts.model.network import STRIDE

TILE = 448  # the paper's tile side
OVERLAP = 128  # px shared by neighbouring tiles: 4 canonical nucleus diameters (seam agreement, docs/model.md)
EDGE_MARGIN = 32  # px at a tile edge left out of the blend: there zero padding shapes the output (docs/model.md)


def tile_starts(length: int, tile: int, overlap: int, align: int = STRIDE) -> np.ndarray:
    """Start offsets of tiles of side ``tile`` covering ``[0, length)`` with at least ``overlap`` shared px.

    Starts are multiples of ``align`` (the network's stride), so every tile
    sees the same pooling and anchor grid as a single pass over the whole
    image: ``length`` and ``tile`` must be multiples of ``align`` too. The
    last tile ends exactly at ``length``; a ``length`` up to ``tile`` gives a
    single tile at 0.

    Parameters
    ----------
    length : int
        Side of the (padded) image along one axis, px.
    tile : int
        Tile side, px.
    overlap : int
        Minimum overlap of neighbouring tiles, px.
    align : int, optional
        The starts' grid, px (the network's stride, 16).

    Returns
    -------
    (n,) int64 ndarray
        Sorted, distinct start offsets, px.

    Raises
    ------
    HtsError
        When ``tile <= overlap + align`` or a side is off the ``align`` grid.
    """
    if length <= tile:
        return np.zeros(1, np.int64)
    if tile <= overlap + align:
        raise HtsError(f"tile ({tile}) must be larger than overlap ({overlap}) plus {align}")
    if length % align or tile % align:
        raise HtsError(f"length ({length}) and tile ({tile}) must be multiples of {align}")
    n = max(2, int(np.ceil((length - overlap) / (tile - overlap - align))))
    starts = np.round(np.linspace(0, length - tile, n) / align).astype(np.int64) * align
    return np.unique(starts)


def fitted_tile(length: int, tile: int, overlap: int, align: int = STRIDE) -> int:
    """The smallest tile side, at most ``tile``, that covers ``length`` with as few tiles as ``tile`` does.

    :func:`tile_starts` spreads its tiles evenly, so a tile longer than it
    needs to be only adds overlap: 2,048 px in tiles of up to 1,280 px take
    two tiles of 1,104 px (1.08x the pixels) instead of two of 1,280 (1.25x).

    Parameters
    ----------
    length : int
        Side of the (padded) image along one axis, px; a multiple of ``align``.
    tile : int
        The largest tile side allowed, px; a multiple of ``align``.
    overlap : int
        Minimum overlap of neighbouring tiles, px.
    align : int, optional
        The stride grid, px.

    Returns
    -------
    int
        A multiple of ``align``, at most ``tile`` (``length`` when one tile covers it).
    """
    if length <= tile:
        return length
    n = len(tile_starts(length, tile, overlap, align))
    side = -(-((length - overlap) // n + overlap + align) // align) * align
    while side < tile and len(tile_starts(length, side, overlap, align)) > n:
        side += align
    return min(side, tile)


def ownership_bounds(starts: np.ndarray, tile: int) -> np.ndarray:
    """Core intervals ``(n, 2)`` of the tiles along one axis: tile k owns ``[lo_k, hi_k)``.

    The boundary between tiles k and k+1 is the middle of their overlap, so
    the cores partition the axis and each core lies at least half an overlap
    from the edges of its tile. A nucleus is kept only from the tile owning
    its centroid: exactly one tile answers for each nucleus.

    Parameters
    ----------
    starts : (n,) int ndarray
        Tile starts from :func:`tile_starts`, px.
    tile : int
        Tile side, px.

    Returns
    -------
    (n, 2) float64 ndarray
        ``[lo, hi)`` per tile, px; the first ``lo`` is -inf and the last ``hi`` inf.
    """
    mids = (starts[1:] + starts[:-1] + tile) / 2.0
    lo = np.concatenate(([-np.inf], mids))
    hi = np.concatenate((mids, [np.inf]))
    return np.stack((lo, hi), axis=1)


def blend_ramp(tile: int, overlap: int, margin: int = EDGE_MARGIN) -> np.ndarray:
    """1D blending weights ``(tile,)``: ~0 over the outer ``margin`` px, a linear ramp, then 1.

    The ramp rises over the middle of the overlap, from ``margin`` to
    ``overlap - margin`` px from each end, so a neighbour's weight falls as
    this tile's rises. The outer px are where the network saw the zero
    padding beyond the tile instead of the image, so they differ most
    from a single pass; they are left out (weight 1e-3, never 0, so a pixel
    covered by one tile only keeps that tile's value), which raises tiled vs
    single-pass agreement (see docs/performance.md).

    Parameters
    ----------
    tile : int
        Tile side, px.
    overlap : int
        Tile overlap, px.
    margin : int, optional
        Outer px left out; capped at a quarter of ``overlap``.

    Returns
    -------
    (tile,) float32 ndarray
        Weights in [1e-3, 1]; the 2D weight is the outer product of two ramps.
    """
    m = min(margin, overlap // 4)
    i = np.arange(tile, dtype=np.float32) + 0.5
    ramp = np.clip((np.minimum(i, tile - i) - m) / max(overlap - 2 * m, 1), 1e-3, 1.0)
    return ramp.astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile: its origin ``(y0, x0)``, the image area it covers, and its core (owned area)."""

    y0: int
    x0: int
    h: int  # valid rows (< tile side only where the image is smaller than a tile)
    w: int
    core: tuple[float, float, float, float]  # y_lo, y_hi, x_lo, x_hi


def tile_grid(shape: tuple[int, int], tile: int = TILE, overlap: int = OVERLAP) -> tuple[list[Tile], tuple[int, int]]:
    """The tiles of an image of ``shape`` and the tile side ``(th, tw)`` actually used.

    The image is taken as zero-padded at the bottom and right to a multiple
    of the network's stride (16). An image side shorter than ``tile`` uses
    one tile of that side rounded up to a multiple of the stride (no wasted
    computation on small images); a longer side uses the shortest tiles
    that need no more tiles than ``tile`` does (:func:`fitted_tile`).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image in the network's frame, px.
    tile : int, optional
        The largest tile side, px.
    overlap : int, optional
        Minimum tile overlap, px.

    Returns
    -------
    tiles : list of Tile
        Row-major, with their cores from :func:`ownership_bounds`.
    tile_shape : tuple of int
        ``(th, tw)``, px, multiples of 16.
    """
    h, w = shape
    ph, pw = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    th, tw = fitted_tile(ph, tile, overlap), fitted_tile(pw, tile, overlap)
    ys, xs = tile_starts(ph, th, overlap), tile_starts(pw, tw, overlap)
    cy, cx = ownership_bounds(ys, th), ownership_bounds(xs, tw)
    tiles = [
        Tile(int(y0), int(x0), min(th, h - int(y0)), min(tw, w - int(x0)), (cy[a, 0], cy[a, 1], cx[b, 0], cx[b, 1]))
        for a, y0 in enumerate(ys)
        for b, x0 in enumerate(xs)
    ]
    return tiles, (th, tw)
