"""Tests for hts.synthetic.volumes: time-lapse and z-stack plates hold exactly the truth they report."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from hts.errors import HtsError
from hts.io.ngff import open_source
from hts.io.ngff_image import image_info
from hts.synthetic.nuclei import SyntheticConfig, generate
from hts.synthetic.volumes import (
    TimelapseSpec,
    TimelapseTruth,
    ZStackSpec,
    ZStackTruth,
    _appearance,
    read_truth_volume,
    write_timelapse,
    write_zstack,
)

DOUBLING = {"A/1": 16.0, "A/2": 24.0, "B/1": 48.0, "B/2": math.inf}  # the default wells' doubling times, h
FULL = np.ones((3, 3, 3), bool)  # 26-connectivity


@pytest.fixture(scope="module", params=["0.4", "0.5"])
def timelapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TimelapseTruth]:
    """The default time-lapse plate (2 x 2 wells, 6 time points 4 h apart, 192 px), in each NGFF version."""
    path = tmp_path_factory.mktemp("timelapse") / "tl.zarr"
    return path, write_timelapse(path, TimelapseSpec(version=request.param))


@pytest.fixture(scope="module")
def zstack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ZStackTruth]:
    """The default z-stack plate (one well, 2 fields of 16 x 192 x 192)."""
    path = tmp_path_factory.mktemp("zstack") / "z.zarr"
    return path, write_zstack(path)


def level0(path: Path, image_path: str) -> np.ndarray:
    """The full-resolution image array of a field."""
    group = zarr.open_group(str(path / image_path), mode="r")
    return np.asarray(group[image_info(group).levels[0]])


def test_timelapse_counts_are_the_labels_and_grow_as_designed(timelapse: tuple[Path, TimelapseTruth]) -> None:
    path, truth = timelapse
    assert truth.doubling_time_h == DOUBLING
    counts = truth.counts
    assert list(counts.columns) == ["well", "field", "t", "time_h", "n_nuclei"] and len(counts) == 4 * 6
    assert np.allclose(counts["time_h"], counts["t"] * 4.0)
    for (well, field), rows in counts.groupby(["well", "field"]):
        labels = read_truth_volume(path, f"{well}/{field}")
        assert labels.shape == (6, 1, 192, 192) and labels.dtype == np.uint32
        designed = [round(25 * 2 ** (t * 4.0 / DOUBLING[well])) for t in range(6)]
        assert rows["n_nuclei"].tolist() == designed, well
        for t, n in zip(rows["t"], rows["n_nuclei"]):
            present = np.unique(labels[t][labels[t] > 0])
            assert labels[t].max() == n and np.array_equal(present, np.arange(1, n + 1)), (well, t)
        for t in range(5):  # nuclei stay: every labelled pixel at t keeps its label at t + 1
            earlier = labels[t] > 0
            assert np.array_equal(labels[t + 1][earlier], labels[t][earlier]), (well, t)
        if math.isinf(DOUBLING[well]):
            assert (labels == labels[0]).all() and set(rows["n_nuclei"]) == {25}
        else:  # the growth rate comes back from the counts
            slope = np.polyfit(rows["time_h"], np.log2(rows["n_nuclei"]), 1)[0]
            assert 1 / slope == pytest.approx(DOUBLING[well], rel=0.1), well
    assert counts.groupby("well")["n_nuclei"].max().to_dict() == {"A/1": 59, "A/2": 45, "B/1": 33, "B/2": 25}


def test_timelapse_image_shows_only_the_nuclei_present(timelapse: tuple[Path, TimelapseTruth]) -> None:
    path, _ = timelapse
    image = level0(path, "A/1/0").astype(float)  # the fastest-growing well
    labels = read_truth_volume(path, "A/1/0")
    later = (labels[5, 0] > 0) & (labels[0, 0] == 0)  # nuclei not there yet at t = 0
    inner = ndimage.binary_erosion(later, iterations=3)
    dapi0, dapi5 = image[0, 0, 0], image[5, 0, 0]
    background = np.median(dapi5[ndimage.binary_dilation(labels[5, 0] > 0, iterations=6) == 0])
    assert abs(np.mean(dapi0[inner]) - background) < 5  # hidden nuclei are background at t = 0 ...
    assert np.mean(dapi5[inner]) > background + 500  # ... and bright once they appear
    shown = labels[0, 0] > 0
    assert np.mean(dapi0[shown]) > background + 500
    gfp0, gfp5 = image[0, 1, 0], image[5, 1, 0]  # the cytoplasm-like channel follows the nuclei present
    assert np.mean(gfp5[inner]) > np.mean(gfp0[inner]) + 100


def test_nuclei_appear_after_the_touching_ones_drawn_over_them() -> None:
    """Of two touching nuclei, generate() draws the higher label over the lower: it must appear first."""
    _, final = generate(SyntheticConfig(shape=(128, 128), n_nuclei=40, cluster_fraction=0.5), seed=1)
    a = np.concatenate([final[:-1].ravel(), final[:, :-1].ravel()]).astype(np.int64)
    b = np.concatenate([final[1:].ravel(), final[:, 1:].ravel()]).astype(np.int64)
    touch = (a > 0) & (b > 0) & (a != b)
    over, under = np.maximum(a, b)[touch], np.minimum(a, b)[touch]
    assert over.size > 20
    orders = [_appearance(final, np.random.default_rng(k)) for k in range(3)]
    for rank in orders:
        assert rank[0] == 0 and sorted(rank[1:]) == list(range(1, final.max() + 1))
        assert (rank[over] < rank[under]).all()
    assert not np.array_equal(orders[0], orders[1])  # still a random order


def test_timelapse_opens_as_a_plate_with_a_t_axis(timelapse: tuple[Path, TimelapseTruth]) -> None:
    path, truth = timelapse
    source = open_source(path)
    assert source.kind == "plate" and source.version == truth.spec.version and not source.skipped
    assert sorted(f.path for f in source.fields) == ["A/1/0", "A/2/0", "B/1/0", "B/2/0"]
    group = zarr.open_group(str(path / "B/2/0"), mode="r")
    info = image_info(group)
    assert info.axes == ("t", "c", "z", "y", "x") and info.axis_size("t") == 6
    assert info.shapes == ((6, 2, 1, 192, 192), (6, 2, 1, 96, 96))
    assert info.channels == ("DAPI", "GFP") and info.axis_scale("t") == 4.0
    assert info.axis_meta[0].get("unit") == "hour"
    assert group[info.levels[0]].chunks == (1, 1, 1, 192, 192) and group[info.levels[0]].dtype == np.uint16
    label_info = image_info(group["labels/truth"])
    assert label_info.axes == ("t", "z", "y", "x") and label_info.shapes == ((6, 1, 192, 192), (6, 1, 96, 96))
    assert group["labels/truth"][label_info.levels[0]].chunks == (1, 1, 192, 192)


def test_zstack_labels_are_disjoint_ellipsoids(zstack: tuple[Path, ZStackTruth]) -> None:
    path, truth = zstack
    assert list(truth.counts.columns) == ["well", "field", "n_nuclei"]
    assert truth.counts[["well", "field"]].values.tolist() == [["A/1", 0], ["A/1", 1]]
    for row in truth.counts.itertuples():
        labels = read_truth_volume(path, f"{row.well}/{row.field}")
        assert labels.shape == (16, 192, 192) and labels.dtype == np.uint32
        n = row.n_nuclei
        assert 18 <= n <= 24 and np.array_equal(np.unique(labels[labels > 0]), np.arange(1, n + 1))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            own = labels[box] == i
            assert ndimage.label(own, FULL)[1] == 1, i  # one piece: nothing cut through it
            assert box[0].stop - box[0].start <= 9  # semi-axis <= 4 planes
            inner = all(s.start > 0 and s.stop < 192 for s in box[1:]) and box[0].start > 0 and box[0].stop < 16
            if inner:  # whole: about the volume of an ellipsoid of semi-axes 3-4 planes, 6-12 px
                assert 0.7 * 4 / 3 * math.pi * 3 * 8 * 6 < sizes[i - 1] < 1.3 * 4 / 3 * math.pi * 4 * 12 * 12, i
        footprints = [(labels == i).any(axis=0) for i in range(1, n + 1)]
        stacked = [(i, j) for i, j in combinations(range(n), 2) if (footprints[i] & footprints[j]).any()]
        assert len(stacked) >= 3  # nuclei above one another, apart in z
        merged = ndimage.label(labels.max(axis=0) > 0)[1]
        assert merged < n  # a maximum projection merges them


def test_zstack_intensity_peaks_at_each_centre_plane(zstack: tuple[Path, ZStackTruth]) -> None:
    path, _ = zstack
    image = level0(path, "A/1/0").astype(float)
    labels = read_truth_volume(path, "A/1/0")
    assert image.shape == (1, 16, 192, 192)
    dapi = image[0]
    background = np.median(dapi[ndimage.binary_dilation(labels > 0, iterations=4) == 0])
    assert 95 < background < 105
    whole = 0
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        own = labels[box] == i
        per_plane = np.array([dapi[box][k][own[k]].mean() for k in range(own.shape[0])]) - background
        assert per_plane.max() > 500, i
        if box[0].start > 0 and box[0].stop < 16:  # not cut by the stack's top or bottom
            whole += 1
            assert per_plane.argmax() not in (0, own.shape[0] - 1), i  # brightest inside ...
            assert max(per_plane[0], per_plane[-1]) < 0.75 * per_plane.max(), i  # ... dimmer at its top and bottom
    assert whole >= 5


def test_zstack_opens_with_czyx_axes(tmp_path: Path, zstack: tuple[Path, ZStackTruth]) -> None:
    path, _ = zstack
    again = tmp_path / "z04.zarr"
    write_zstack(again, ZStackSpec(fields=1, version="0.4"))
    for p, version, n in ((path, "0.5", 2), (again, "0.4", 1)):
        source = open_source(p)
        assert source.kind == "plate" and source.version == version and len(source.fields) == n
        group = zarr.open_group(str(p / "A/1/0"), mode="r")
        info = image_info(group)
        assert info.axes == ("c", "z", "y", "x") and info.channels == ("DAPI",)
        assert info.shapes == ((1, 16, 192, 192), (1, 16, 96, 96))  # z is never downsampled
        assert group[info.levels[0]].chunks == (1, 1, 192, 192)
        label_info = image_info(group["labels/truth"])
        assert label_info.axes == ("z", "y", "x") and label_info.shapes == ((16, 192, 192), (16, 96, 96))


def test_deterministic_by_seed(tmp_path: Path) -> None:
    small = TimelapseSpec(rows=1, columns=2, size=96, timepoints=3, n0=6, gfp=False, seed=3)
    runs = [write_timelapse(tmp_path / f"t{k}.zarr", spec) for k, spec in
            enumerate((small, small, TimelapseSpec(**{**small.__dict__, "seed": 4})))]
    assert runs[0].counts.equals(runs[1].counts)
    for image_path in ("A/1/0", "A/2/0"):
        a, b, c = (level0(tmp_path / f"t{k}.zarr", image_path) for k in range(3))
        assert a.shape == (3, 1, 1, 96, 96) and np.array_equal(a, b) and not np.array_equal(a, c)
        la, lb, lc = (read_truth_volume(tmp_path / f"t{k}.zarr", image_path) for k in range(3))
        assert np.array_equal(la, lb) and not np.array_equal(la, lc)
    tiny = ZStackSpec(fields=1, size=96, planes=12, n_nuclei=8, seed=3)
    z = [write_zstack(tmp_path / f"z{k}.zarr", spec) for k, spec in
         enumerate((tiny, tiny, ZStackSpec(**{**tiny.__dict__, "seed": 4})))]
    assert z[0].counts.equals(z[1].counts)
    a, b, c = (level0(tmp_path / f"z{k}.zarr", "A/1/0") for k in range(3))
    assert a.shape == (1, 12, 96, 96) and np.array_equal(a, b) and not np.array_equal(a, c)
    la, lb = (read_truth_volume(tmp_path / f"z{k}.zarr", "A/1/0") for k in range(2))
    assert np.array_equal(la, lb)


@pytest.mark.parametrize("make", [
    lambda: TimelapseSpec(version="0.3"),
    lambda: TimelapseSpec(timepoints=0),
    lambda: TimelapseSpec(doubling_h=(12.0, 0.0)),
    lambda: TimelapseSpec(doubling_h=()),
    lambda: TimelapseSpec(timepoints=20),  # too dense by the last time point
    lambda: ZStackSpec(semi_z=(4.0, 3.0)),
    lambda: ZStackSpec(planes=2),
    lambda: ZStackSpec(stacked_fraction=1.5),
])
def test_invalid_specs_are_refused(make) -> None:
    with pytest.raises(HtsError):
        make()


def test_overfull_zstack_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HtsError, match="cannot place"):
        write_zstack(tmp_path / "full.zarr", ZStackSpec(fields=1, size=64, planes=8, n_nuclei=400))
