"""hts.engine.zlink: plane IoU, linking per-plane labels into 3D nuclei, and 3D matching.

The z-stacks are built here from 3D ellipsoids (the truth), each plane then
labelled on its own, as the 2D engine would, with arbitrary ids.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label

from hts.engine.zlink import link_planes, match_3d, plane_iou
from hts.errors import HtsError

SHAPE = (12, 128, 128)


def ellipsoid_stack(seed: int = 0) -> np.ndarray:
    """(12, 128, 128) uint32 truth: 20 ellipsoids on a 5 x 4 xy grid in two z layers.

    Grid neighbours sit in alternating z layers and their xy footprints
    overlap, so they touch in the planes where both layers are present and
    cover the same (y, x) on different planes. A voxel claimed by two
    ellipsoids goes to the one whose normalised distance is smaller (a shared
    boundary, as segmentations of touching nuclei have). The caps are cut at
    80% of the z semi-axis: a plane through a sliver cap (a few px^2) has an
    IoU with its neighbour plane under any useful threshold, and no linker
    could keep it.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=np.float64)
    best = np.full(SHAPE, 1.0)
    truth = np.zeros(SHAPE, np.uint32)
    k = 0
    for gy in range(5):
        for gx in range(4):
            k += 1
            cy = 14 + gy * 22 + rng.uniform(-1.5, 1.5)
            cx = 16 + gx * 28 + rng.uniform(-1.5, 1.5)
            cz = (4.5 if (gx + gy) % 2 == 0 else 7.0) + rng.uniform(-0.5, 0.5)
            a, c = rng.uniform(12, 15), rng.uniform(3.2, 4.0)
            d = ((z - cz) / c) ** 2 + ((y - cy) / a) ** 2 + ((x - cx) / a) ** 2
            d[np.abs(z - cz) > 0.8 * c] = np.inf
            win = d < best
            best[win] = d[win]
            truth[win] = k
    return truth


def permuted_planes(truth: np.ndarray, seed: int = 1) -> np.ndarray:
    """Each plane's truth ids replaced by random, sparse, per-plane ids (unrelated between planes)."""
    rng = np.random.default_rng(seed)
    planes = np.zeros_like(truth)
    for z in range(truth.shape[0]):
        lut = np.zeros(int(truth.max()) + 1, np.uint32)
        lut[1:] = rng.choice(10**6, lut.size - 1, replace=False) + 1
        planes[z] = lut[truth[z]]
    return planes


def relabelled_planes(truth: np.ndarray) -> np.ndarray:
    """Each plane labelled by skimage.measure.label (ids in raster order per plane)."""
    return np.stack([label(p, background=0, connectivity=1) for p in truth]).astype(np.uint32)


def one_to_one(a: np.ndarray, b: np.ndarray) -> bool:
    """Same foreground and every id of ``a`` maps to exactly one id of ``b`` and back."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack((a[a > 0], b[b > 0])), axis=1)
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


def disc_stack(centres: list[tuple[int, int, int] | None], radius: int = 8, size: int = 48) -> np.ndarray:
    """One disc per plane at ``(y, x, id)``; ``None`` leaves the plane empty."""
    stack = np.zeros((len(centres), size, size), np.uint32)
    for z, c in enumerate(centres):
        if c is not None:
            rr, cc = disk(c[:2], radius, shape=(size, size))
            stack[z, rr, cc] = c[2]
    return stack


def test_the_synthetic_stack_is_a_hard_one():
    truth = ellipsoid_stack()
    assert np.unique(truth).size - 1 == 20
    touching = sum(int(((p[:, 1:] != p[:, :-1]) & (p[:, 1:] > 0) & (p[:, :-1] > 0)).sum()
                       + ((p[1:] != p[:-1]) & (p[1:] > 0) & (p[:-1] > 0)).sum()) for p in truth)
    assert touching > 300  # boundary px between touching nuclei inside planes
    owners = [np.unique(truth[:, yy, xx][truth[:, yy, xx] > 0]).size for yy in range(128) for xx in range(128)]
    assert max(owners) >= 2  # the same (y, x) belongs to different nuclei on different planes
    assert label(truth > 0).max() < 20  # connected components would merge nuclei


@pytest.mark.parametrize("make_planes", [permuted_planes, relabelled_planes])
def test_link_planes_recovers_the_3d_nuclei(make_planes):
    truth = ellipsoid_stack()
    planes = make_planes(truth)
    assert not one_to_one(truth, planes)  # the per-plane ids alone do not say which nucleus
    out = link_planes(planes)
    assert out.dtype == np.uint32 and out.shape == truth.shape
    assert one_to_one(truth, out)
    assert set(np.unique(out)) == set(range(21))
    m = match_3d(truth, out, iou=0.9)
    assert m == {"true": 20, "pred": 20, "matched": 20, "recall": 1.0, "precision": 1.0}


def test_ids_are_dense_in_order_of_first_appearance():
    planes = np.zeros((3, 20, 20), np.uint32)
    planes[0, 2:6, 2:6] = 9  # first by plane order
    planes[0, 10:14, 10:14] = 4  # ... but 4 < 9: id 1
    planes[1, 2:6, 2:6] = 77  # continues 9
    planes[1, 15:19, 2:6] = 3  # new: id 3
    planes[2, 15:19, 15:19] = 2  # new: id 4
    out = link_planes(planes)
    assert out[0, 10, 10] == 1 and out[0, 2, 2] == 2
    assert out[1, 2, 2] == 2 and out[1, 15, 2] == 3 and out[2, 15, 15] == 4
    assert out.max() == 4


def test_a_nucleus_missing_for_one_plane_comes_back_with_a_new_id():
    stack = disc_stack([(24, 24, 5), (24, 24, 6), None, (24, 24, 5), (24, 24, 1)])
    out = link_planes(stack)
    assert [np.unique(p[p > 0]).tolist() for p in out] == [[1], [1], [], [2], [2]]


def test_different_nuclei_overlapping_in_xy_are_not_merged_below_the_threshold():
    # nucleus A on planes 0-2, nucleus B on planes 3-5, B's disc shifted so it overlaps A's a little
    stack = disc_stack([(20, 20, 1)] * 3 + [(20, 31, 1)] * 3, radius=8)
    _, _, iou = plane_iou(stack[2], stack[3])
    assert 0.05 < iou[0, 0] < 0.25
    out = link_planes(stack, iou=0.25)
    assert [int(p.max()) for p in out] == [1, 1, 1, 2, 2, 2]
    assert link_planes(stack, iou=0.05).max() == 1  # a lower threshold merges them


def test_matching_is_one_to_one():
    # plane 0: one disc; plane 1: its two halves, each with IoU ~0.5 with the disc
    stack = disc_stack([(24, 24, 1), (24, 24, 1)], radius=10)
    stack[1, :, 24:] *= 2
    out = link_planes(stack)
    ids = np.unique(out[1][out[1] > 0]).tolist()
    assert ids == [1, 2]  # one half keeps the id; the other does not take it too
    assert link_planes(stack, iou=0.6).max() == 3  # neither half reaches 0.6


def test_iou_zero_keeps_the_planes_independent():
    truth = ellipsoid_stack()
    planes = permuted_planes(truth)
    out = link_planes(planes, iou=0)
    per_plane = [np.unique(p[p > 0]) for p in out]
    assert sum(ids.size for ids in per_plane) == out.max()
    assert np.unique(np.concatenate(per_plane)).size == out.max()  # no id on two planes
    assert set(np.unique(out)) == set(range(int(out.max()) + 1))  # dense
    assert all(one_to_one(p, q) for p, q in zip(planes, out))  # each plane's segmentation kept
    assert np.array_equal(out[:1], link_planes(planes[:1]))  # Z == 1: no linking either


def test_empty_planes_and_empty_stacks():
    assert np.array_equal(link_planes(np.zeros((4, 8, 8), np.uint16)), np.zeros((4, 8, 8), np.uint32))
    assert link_planes(np.zeros((0, 8, 8), np.uint32)).shape == (0, 8, 8)
    stack = disc_stack([None, (24, 24, 3), (24, 24, 3), None])
    out = link_planes(stack)
    assert out.dtype == np.uint32 and [int(p.max()) for p in out] == [0, 1, 1, 0]


def test_plane_iou_is_the_pairwise_iou():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, (30, 40)).astype(np.uint32) * 7  # ids 7, 14, ..., 35
    b = rng.integers(0, 4, (30, 40)).astype(np.uint32)
    ids_a, ids_b, iou = plane_iou(a, b)
    assert ids_a.tolist() == [7, 14, 21, 28, 35] and ids_b.tolist() == [1, 2, 3]
    for i, ia in enumerate(ids_a):
        for j, jb in enumerate(ids_b):
            inter = ((a == ia) & (b == jb)).sum()
            assert iou[i, j] == pytest.approx(inter / ((a == ia) | (b == jb)).sum())
    ids_a, ids_b, iou = plane_iou(np.zeros((5, 5), np.uint32), b[:5, :5])
    assert ids_a.size == 0 and iou.shape == (0, ids_b.size)


def test_match_3d_counts_misses_and_merges():
    truth = ellipsoid_stack()
    pred = truth.copy()
    pred[pred == 3] = 0  # missed
    pred[pred == 2] = 1  # two merged into one (IoU of the merge with either < 0.9)
    m = match_3d(truth, pred, iou=0.9)
    assert (m["true"], m["pred"], m["matched"]) == (20, 18, 17)
    assert m["recall"] == pytest.approx(17 / 20) and m["precision"] == pytest.approx(17 / 18)
    m = match_3d(np.zeros((2, 4, 4), np.uint32), np.zeros((2, 4, 4), np.uint32))
    assert m["matched"] == 0 and np.isnan(m["recall"]) and np.isnan(m["precision"])


def test_bad_input_is_an_hts_error():
    with pytest.raises(HtsError):
        link_planes(np.zeros((8, 8), np.uint32))
    with pytest.raises(HtsError):
        link_planes(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(HtsError):
        link_planes(np.zeros((2, 8, 8), np.uint32), iou=1.5)
    with pytest.raises(HtsError):
        plane_iou(np.zeros((8, 8), np.uint32), np.zeros((8, 9), np.uint32))
    with pytest.raises(HtsError):
        match_3d(np.zeros((2, 8, 8), np.int32) - 1, np.zeros((2, 8, 8), np.int32))


def test_split_waists_cuts_stacked_nuclei_bridged_by_blur_and_keeps_one_ellipsoid_whole():
    from hts.engine.zlink import split_waists

    z, y, x = np.ogrid[:15, :40, :40]
    lower = ((z - 3) / 3.0) ** 2 + ((y - 20) / 9.0) ** 2 + ((x - 20) / 9.0) ** 2 <= 1
    upper = ((z - 11) / 3.0) ** 2 + ((y - 22) / 9.0) ** 2 + ((x - 21) / 9.0) ** 2 <= 1
    bridge = (z == 7) & (((y - 21) / 3.0) ** 2 + ((x - 20) / 3.0) ** 2 <= 1)  # the blur between them, segmented
    linked = (lower | upper | bridge).astype(np.uint32)  # what IoU linking makes of it: one label
    cut = split_waists(linked)
    assert len(np.unique(cut[lower])) == 1 and len(np.unique(cut[upper])) == 1
    assert cut[lower].max() != cut[upper].max() and set(np.unique(cut)) == {0, 1, 2}
    whole = split_waists(lower.astype(np.uint32) * 5)
    assert set(np.unique(whole)) == {0, 1}
    assert np.array_equal(split_waists(linked, ratio=0), linked)
