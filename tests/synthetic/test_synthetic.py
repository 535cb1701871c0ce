"""Tests for hts.synthetic.nuclei: determinism, ground-truth cleanliness, realism checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from hts.errors import HtsError
from hts.synthetic.nuclei import SyntheticConfig, generate, generate_dataset, true_count

EIGHT = np.ones((3, 3), bool)


def touching_fraction(labels: np.ndarray) -> float:
    """Share of nuclei 8-adjacent to a different nucleus."""
    big = np.iinfo(labels.dtype).max
    hi = ndimage.maximum_filter(labels, footprint=EIGHT, mode="constant", cval=0)
    masked = np.where(labels == 0, big, labels)
    lo = ndimage.minimum_filter(masked, footprint=EIGHT, mode="constant", cval=big)
    fg = labels > 0
    touching = np.unique(labels[fg & ((hi != labels) | (lo != labels))])
    return touching.size / max(1, int(labels.max()))


def test_deterministic_and_seed_dependent() -> None:
    cfg = SyntheticConfig(shape=(96, 128))
    a_img, a_lab = generate(cfg, seed=5)
    b_img, b_lab = generate(cfg, seed=5)
    c_img, c_lab = generate(cfg, seed=6)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_lab, c_lab)


def test_dataset_deterministic_and_distinct() -> None:
    cfg = SyntheticConfig(shape=(64, 64))
    imgs, labs = generate_dataset(3, cfg, seed=2)
    imgs2, labs2 = generate_dataset(3, cfg, seed=2)
    assert len(imgs) == len(labs) == 3
    for a, b, la, lb in zip(imgs, imgs2, labs, labs2):
        assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(imgs[0], imgs[1])
    assert not np.array_equal(imgs[1], imgs[2])
    assert generate_dataset(0, cfg) == ([], [])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_shapes_and_dtypes(dtype: str) -> None:
    img, lab = generate(SyntheticConfig(shape=(80, 112), dtype=dtype), seed=1)
    assert img.shape == (80, 112) and img.dtype == np.dtype(dtype)
    assert lab.shape == (80, 112) and lab.dtype == np.uint32
    assert np.isfinite(img.astype(np.float64)).all()
    assert img.max() > img.min()


@pytest.mark.parametrize(
    "cfg",
    [
        SyntheticConfig(),
        SyntheticConfig(shape=(128, 160), cluster_fraction=1.0, irregularity=0.4, density=0.002),
        SyntheticConfig(shape=(128, 128), diameter=8, diameter_spread=0.6),
    ],
)
def test_labels_sequential_connected_and_sized(cfg: SyntheticConfig) -> None:
    for seed in (0, 1):
        _, lab = generate(cfg, seed=seed)
        n = int(lab.max())
        assert lab.dtype == np.uint32 and n > 0
        areas = np.bincount(lab.ravel())[1:]
        assert areas.size == n and (areas >= 15).all()  # sequential 1..N, no tiny fragments
        assert true_count(lab) == n
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            assert ndimage.label(lab[sl] == i, EIGHT)[1] == 1, f"label {i} is fragmented"


def test_nuclei_brighter_than_background() -> None:
    img, lab = generate(SyntheticConfig(dtype="float32"), seed=3)
    inside, outside = img[lab > 0].mean(), img[lab == 0].mean()
    assert inside > 2 * outside
    assert 0.3 * 200 < inside < 1.5 * 200  # photon units, ~ photons * brightness


def test_many_nuclei_touch() -> None:
    fractions = [touching_fraction(generate(SyntheticConfig(), seed=s)[1]) for s in range(3)]
    assert min(fractions) > 0.15
    _, lab = generate(SyntheticConfig(cluster_fraction=0.0, density=0.0005), seed=0)
    assert touching_fraction(lab) < min(fractions)


@pytest.mark.parametrize("diameter", [12.0, 20.0, 32.0])
def test_median_diameter(diameter: float) -> None:
    cfg = SyntheticConfig(shape=(256, 256), diameter=diameter, n_nuclei=int(25000 / diameter**2))
    _, lab = generate(cfg, seed=4)
    areas = np.bincount(lab.ravel())[1:]
    eq = 2 * np.sqrt(areas / np.pi)
    assert abs(np.median(eq) - diameter) < 0.25 * diameter


def test_counts_respected() -> None:
    for seed in range(3):
        _, lab = generate(SyntheticConfig(n_nuclei=80), seed=seed)
        assert abs(true_count(lab) - 80) <= 8
    _, lab = generate(SyntheticConfig(shape=(200, 300), density=0.001), seed=0)
    assert abs(true_count(lab) - 60) <= 6
    _, lab = generate(SyntheticConfig(n_nuclei=0, debris=0), seed=0)
    assert true_count(lab) == 0


def test_debris_outside_labels() -> None:
    cfg = SyntheticConfig(n_nuclei=0, debris=8, dtype="float32", read_noise=0.0)
    img, lab = generate(cfg, seed=0)
    clean, _ = generate(SyntheticConfig(n_nuclei=0, debris=0, dtype="float32"), seed=0)
    assert not lab.any()
    background = float(np.median(img))
    assert img.max() > background + 20  # bright specks well above the ~8-photon background
    assert img.max() > clean.max() + 10


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"shape": (8, 64)}, "shape"),
        ({"shape": (64,)}, "shape"),
        ({"shape": (64.0, 64)}, "shape"),
        ({"n_nuclei": -1}, "n_nuclei"),
        ({"n_nuclei": 10**9}, "n_nuclei"),
        ({"density": -0.1}, "density"),
        ({"diameter": 2.0}, "diameter"),
        ({"diameter": 500.0}, "diameter"),
        ({"diameter_spread": -1.0}, "diameter_spread"),
        ({"cluster_fraction": 1.5}, "cluster_fraction"),
        ({"irregularity": float("nan")}, "irregularity"),
        ({"blur_sigma": -1.0}, "blur_sigma"),
        ({"illumination": 2.0}, "illumination"),
        ({"photons": 0.0}, "photons"),
        ({"read_noise": -1.0}, "read_noise"),
        ({"debris": -2}, "debris"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_bad_config_raises(kwargs: dict, field: str) -> None:
    with pytest.raises(HtsError, match=field):
        SyntheticConfig(**kwargs)


def test_bad_arguments_raise() -> None:
    with pytest.raises(HtsError, match="seed"):
        generate(SyntheticConfig(), seed=-1)
    with pytest.raises(HtsError, match="n must"):
        generate_dataset(-1)


def test_small_image_is_fast() -> None:
    cfg = SyntheticConfig()
    generate(cfg, seed=0)
    t0 = time.perf_counter()
    generate(cfg, seed=1)
    assert time.perf_counter() - t0 < 0.5  # typically ~0.02 s
