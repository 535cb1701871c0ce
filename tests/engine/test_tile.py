"""Tiling geometry and tiled inference: seamless probabilities, one marker per nucleus."""

from __future__ import annotations

import numpy as np
import pytest

from hts.engine.tile import blend_ramp, fitted_tile, ownership_bounds, tile_grid, tile_starts


@pytest.mark.parametrize("length", [448, 464, 704, 1008, 2048, 5008])
def test_tile_starts_cover_with_overlap_on_the_stride_grid(length):
    starts = tile_starts(length, 448, 96)
    assert starts[0] == 0 and (starts[-1] + 448 == length or length <= 448)
    assert np.all(np.diff(starts) <= 448 - 96)  # at least the overlap is shared
    assert np.all(np.diff(starts) > 0)
    assert np.all(starts % 16 == 0)


def test_ownership_partitions_the_axis_and_stays_inside_tiles():
    starts = tile_starts(2048, 448, 96)
    assert len(starts) >= 5
    bounds = ownership_bounds(starts, 448)
    assert bounds[0, 0] == -np.inf and bounds[-1, 1] == np.inf
    np.testing.assert_array_equal(bounds[1:, 0], bounds[:-1, 1])
    for s, (lo, hi) in zip(starts, bounds):
        assert max(lo, 0) >= s and min(hi, 2048) <= s + 448
        if np.isfinite(lo):
            assert lo - s >= 48  # half an overlap of context before the core
        if np.isfinite(hi):
            assert s + 448 - hi >= 48


def test_grid_small_image_uses_one_small_tile():
    tiles, (th, tw) = tile_grid((70, 1000))
    assert th == 80 and tw == 448
    assert {t.y0 for t in tiles} == {0} and all(t.h == 70 for t in tiles)


@pytest.mark.parametrize("length", [464, 1008, 2048, 3280, 5008])
@pytest.mark.parametrize("tile", [448, 1280])
def test_fitted_tiles_are_as_few_and_no_longer_than_needed(length, tile):
    side = fitted_tile(length, tile, 128)
    assert side <= tile and side % 16 == 0
    n = len(tile_starts(length, side, 128))
    assert n == len(tile_starts(length, tile, 128))  # no more tiles than the largest side needs
    if side > 144 + 16:  # one stride shorter would need more tiles
        assert len(tile_starts(length, side - 16, 128)) > n
    starts = tile_starts(length, side, 128)
    assert starts[-1] + side == length and np.all(np.diff(starts) <= side - 128)  # still covers, with the overlap


def test_grid_of_a_large_image_uses_two_fitted_tiles_per_axis():
    tiles, (th, tw) = tile_grid((2048, 2048), 1280)
    assert (th, tw) == (1104, 1104) and len(tiles) == 4


def test_blend_ramp_positive_and_flat_in_the_middle():
    r = blend_ramp(448, 96)
    assert r.min() > 0 and r[72:376].min() == 1.0 and r[71] < 1.0
    assert np.all(r[:24] == np.float32(1e-3)) and np.all(r[-24:] == np.float32(1e-3))  # edge margin: 96 // 4 px
    assert np.all(np.diff(r[:224]) >= 0)


def test_blend_ramps_of_neighbours_cross_in_the_middle_of_the_overlap():
    r = blend_ramp(448, 128)
    a, b = r[448 - 128 :], r[:128]  # tile k's right end over tile k+1's left end
    assert np.allclose(a, b[::-1])  # the two weights mirror each other across the overlap
    assert a[:32].max() > 0.99 and b[:32].max() <= 1e-3  # a tile's outer 32 px defer to its neighbour
