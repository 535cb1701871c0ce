"""The watershed layer: RPN-centroid markers on the foreground."""

from __future__ import annotations

import numpy as np
from skimage.draw import disk

from hts.engine.watershed import (
    centroid_markers,
    distance_markers,
    instance_labels,
    relabel,
    watershed_layer,
)


def touching_discs() -> tuple[np.ndarray, np.ndarray]:
    fg = np.zeros((40, 60), bool)
    truth = np.zeros((40, 60), np.uint32)
    for i, cx in enumerate((20, 36), start=1):
        rr, cc = disk((20, cx), 10)
        fg[rr, cc] = True
        truth[rr, cc] = np.where(truth[rr, cc] == 0, i, truth[rr, cc])
    return fg, truth


def test_separates_two_touching_discs_at_the_neck():
    fg, _ = touching_discs()
    markers = centroid_markers(np.array([[20.5, 20.5], [36.5, 20.5]]), fg)
    labels = watershed_layer(fg, markers)
    assert labels.dtype == np.uint32
    assert labels.max() == 2
    assert labels[20, 15] != labels[20, 41]
    # The line falls at the neck (x = 28): everything left of it is one nucleus.
    assert set(np.unique(labels[:, :27][fg[:, :27]])) == {labels[20, 15]}
    assert set(np.unique(labels[:, 30:][fg[:, 30:]])) == {labels[20, 41]}
    assert ((labels > 0) == fg).all()


def test_markerless_component_is_kept():
    fg, _ = touching_discs()
    fg[2:6, 50:56] = True  # a separate blob that gets no marker
    markers = centroid_markers(np.array([[20.5, 20.5]]), fg)
    labels = watershed_layer(fg, markers)
    assert labels.max() == 2  # the two discs as one (one marker) + the blob
    assert labels[3, 52] != 0 and labels[3, 52] != labels[20, 20]
    assert ((labels > 0) == fg).all()


def test_markers_outside_or_on_background_are_dropped():
    fg, _ = touching_discs()
    m = centroid_markers(np.array([[-3.0, 5.0], [1.0, 1.0], [20.2, 20.9], [200.0, 1.0]]), fg)
    assert np.count_nonzero(m) == 1 and m[20, 20] == 3


def test_empty_foreground_and_min_size():
    assert watershed_layer(np.zeros((5, 5), bool), np.zeros((5, 5), np.int32)).max() == 0
    fg = np.zeros((10, 10), bool)
    fg[0:2, 0:2] = True
    fg[5:9, 5:9] = True
    assert watershed_layer(fg, np.zeros((10, 10), np.int32), min_size=5).max() == 1


def test_instance_labels_with_boxes_and_distance_markers():
    fg, _ = touching_discs()
    prob = fg.astype(np.float32) * 0.9
    boxes = np.array([[10, 10, 31, 31], [26, 10, 47, 31]], np.float32)
    assert instance_labels(prob, boxes).max() == 2
    assert instance_labels(prob, np.zeros((0, 4))).max() == 1  # no markers: one component, not dropped
    assert distance_markers(fg, min_distance=5).max() == 2
    assert instance_labels(prob, None).max() == 2


def test_small_slivers_merge_into_their_neighbour_and_isolated_noise_goes():
    from hts.engine.watershed import merge_small

    lab = np.zeros((12, 20), np.int64)
    lab[2:10, 2:10] = 1  # a nucleus
    lab[2:10, 10:11] = 2  # a 1-px-wide sliver on its border (8 px)
    lab[0:1, 15:17] = 3  # isolated speck (2 px)
    lab[4:10, 13:19] = 4  # another nucleus, not touching the sliver
    merged = merge_small(lab, 10)
    assert (merged[2:10, 10] == 1).all()
    assert set(np.unique(merged)) == {0, 1, 3, 4}  # the speck is left for relabel to drop
    fg = lab > 0
    markers = np.zeros_like(lab, dtype=np.int32)
    markers[5, 5], markers[5, 10], markers[6, 15] = 1, 2, 3
    out = watershed_layer(fg, markers, min_size=10)
    assert out.max() == 2 and out[5, 10] == out[5, 5] and out[0, 15] == 0


def test_noise_size_drops_isolated_objects_apart_from_sliver_merging():
    fg = np.zeros((30, 30), bool)
    fg[2:12, 2:12] = True  # a nucleus (100 px) ...
    fg[5:9, 12:16] = True  # ... with a bulge of its own marker (10 px after the watershed)
    fg[20:24, 20:24] = True  # an isolated micronucleus (16 px)
    markers = np.zeros(fg.shape, np.int32)
    markers[6, 6], markers[6, 14], markers[21, 21] = 1, 2, 3
    assert np.bincount(watershed_layer(fg, markers).ravel())[1:].tolist() == [106, 10, 16]
    kept = watershed_layer(fg, markers, min_size=20, noise_size=12)
    assert kept.max() == 2 and kept[6, 14] == kept[6, 6] and kept[21, 21] > 0
    dropped = watershed_layer(fg, markers, min_size=20)  # noise_size defaults to min_size
    assert dropped.max() == 1 and dropped[21, 21] == 0
    floor = watershed_layer(fg, markers, min_size=5, noise_size=17)  # a floor above the sliver size
    assert floor.max() == 1 and floor[6, 14] == floor[6, 6] and floor[21, 21] == 0  # merged, not dropped
    assert watershed_layer(fg, markers, min_size=5, noise_size=5).max() == 3


def test_size_params_relative_rules_with_an_absolute_noise_floor():
    from hts.engine.watershed import NOISE_MIN_PX, size_params

    small, large = size_params(10.0), size_params(40.0)
    assert small["min_size"] == round(0.1 * np.pi * 100 / 4)  # 8 px slivers at 10 px nuclei
    assert small["noise_size"] == NOISE_MIN_PX == 25  # 5% of 79 px would keep 4-px specks
    assert large["min_size"] == round(0.1 * np.pi * 1600 / 4)  # 126 px
    assert large["noise_size"] == round(0.05 * np.pi * 1600 / 4)  # 63 px: keeps micronuclei the 10% rule dropped
    assert size_params(None) == size_params(20.0)


def test_component_labels_keep_only_what_the_network_separated():
    from hts.engine.watershed import component_labels

    prob = np.zeros((20, 30))
    prob[2:10, 2:10] = prob[2:10, 11:19] = 0.9  # two squares a background line apart
    prob[12:18, 2:28] = 0.9  # two touching nuclei the network merged
    prob[0, 29] = 0.9  # a 1-px speck
    labels = component_labels(prob, 0.5, min_size=4)
    assert labels.max() == 3 and labels.dtype == np.uint32
    assert len(np.unique(labels[12:18, 2:28])) == 1 and labels[0, 29] == 0


def test_relabel_dense_and_sparse_ids_agree():
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 40, (64, 64))
    dense[dense == 7] = 0  # an absent id
    sparse = np.where(dense > 0, dense * 1_000_003, 0)  # ids far apart: the np.unique path
    for min_size in (0, 100):
        a, b = relabel(dense, min_size), relabel(sparse, min_size)
        np.testing.assert_array_equal(a, b)
        ids, counts = np.unique(dense[dense > 0], return_counts=True)
        kept = ids[counts >= max(min_size, 1)]
        assert a.dtype == np.uint32 and a.max() == len(kept)
        np.testing.assert_array_equal(a[dense == kept[0]], 1)  # in order of the input ids
        assert (a[~np.isin(dense, kept)] == 0).all()
