"""scripts/stress_benchmark.py: its perturbations are deterministic, keep the shape and leave nuclei alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from hts.training.data import synthetic_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stress_benchmark.py"


@pytest.fixture(scope="module")
def sb():
    spec = importlib.util.spec_from_file_location("stress_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["stress_benchmark"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("stress_benchmark", None)


@pytest.fixture(scope="module")
def sample():
    d = synthetic_dataset(1, seed=3, shape=(96, 128))
    image = (d.images[0].astype(np.float64) / d.images[0].max() * 200).astype(np.uint8)  # uint8 like the DSB files
    return image, d.labels[0].astype(np.uint16)


def test_every_perturbation_is_deterministic_and_keeps_shape(sb, sample):
    image, labels = sample
    before = image.copy(), labels.copy()
    assert labels.max() > 0
    for p in sb.PERTURBATIONS:
        im1, lab1 = sb.perturbed(p, 7, image, labels)
        im2, lab2 = sb.perturbed(p, 7, image, labels)
        np.testing.assert_array_equal(im1, im2, err_msg=p.name)
        np.testing.assert_array_equal(lab1, lab2, err_msg=p.name)
        assert np.isfinite(im1).all(), p.name
        if p.name.startswith("scale_"):
            f = 0.3 if "0.3" in p.name else 3.0
            shape = tuple(round(s * f) for s in image.shape)
            assert im1.shape == lab1.shape == shape, p.name
            assert set(np.unique(lab1)) <= set(np.unique(labels)), p.name  # nearest neighbour: no new ids
        else:
            assert im1.shape == image.shape, p.name
            np.testing.assert_array_equal(lab1, labels, err_msg=p.name)
    np.testing.assert_array_equal(image, before[0])  # the inputs are not modified
    np.testing.assert_array_equal(labels, before[1])


def test_random_perturbations_differ_between_images(sb, sample):
    image, labels = sample
    for name in ("noise", "debris"):
        a, _ = sb.perturbed(sb.BY_NAME[name], 0, image, labels)
        b, _ = sb.perturbed(sb.BY_NAME[name], 1, image, labels)
        assert not np.array_equal(a, b), name


def test_debris_lands_on_background_only(sb, sample):
    image, labels = sample
    for i in range(5):
        out, lab = sb.perturbed(sb.BY_NAME["debris"], i, image, labels)
        np.testing.assert_array_equal(lab, labels)
        assert out.dtype == image.dtype
        changed = out != image
        assert changed.any()
        assert not (changed & (labels > 0)).any()
        # bright: at least twice the median nucleus intensity (or saturated)
        level = min(2 * np.median(image[labels > 0]), 255)
        assert out[changed].min() >= np.floor(level)


def test_debris_without_room_is_dropped(sb):
    labels = np.ones((32, 32), np.uint16)
    image = np.full((32, 32), 50, np.uint8)
    out = sb.debris(image, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)


def test_gamma_and_jpeg_keep_the_range(sb, sample):
    image, _ = sample
    for g in (0.5, 2.0):
        out = sb.gamma(image, g)
        assert out.dtype == image.dtype and out.max() == image.max() and out.min() >= 0
    j = sb.jpeg(image)
    assert j.dtype == np.float32
    assert image.min() - 1 <= j.min() and j.max() <= image.max() + 1
    assert not np.array_equal(np.rint(j), image)  # lossy at quality 30


def test_noise_level(sb):
    labels = np.zeros((200, 200), np.uint16)
    labels[50:150, 50:150] = 1
    image = np.where(labels > 0, 100, 0).astype(np.uint8)
    out = sb.noise(image, labels, np.random.default_rng(0))
    assert out.dtype == np.float32
    # at the 99th-percentile foreground intensity: sqrt(10% ^ 2 + 5% ^ 2) of it; background: 5%
    assert abs(out[labels > 0].std() / 100 - np.hypot(0.1, 0.05)) < 0.01
    assert abs(out[labels == 0].std() / 100 - 0.05) < 0.005
    assert abs(out[labels > 0].mean() - 100) < 1
