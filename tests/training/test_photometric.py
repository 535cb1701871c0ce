"""hts.training.photometric: each transform does what it says, labels never change, batches are reproducible."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from hts.engine.preprocess import normalize
from hts.errors import HtsError
from hts.synthetic.nuclei import SyntheticConfig, generate, generate_dataset
from hts.training.augment import AugmentParams, random_affine
from hts.training.photometric import (
    PhotometricParams,
    add_blobs,
    adjust_intensity,
    defocus,
    jpeg,
    poisson_gaussian,
    quantize,
    random_photometric,
    shade,
    smooth_field,
)
from hts.training.train import StepBatches, TrainConfig, make_batch

ALL_ON = PhotometricParams(**{f.name: 1.0 for f in dataclasses.fields(PhotometricParams) if f.name.startswith("p_")})
ALL_OFF = PhotometricParams(**{f.name: 0.0 for f in dataclasses.fields(PhotometricParams) if f.name.startswith("p_")})


@pytest.fixture(scope="module")
def nuclei():
    image, labels = generate(SyntheticConfig(shape=(128, 128)), seed=4)
    return normalize(image), labels


def test_transforms_keep_shape_dtype_and_stay_finite(nuclei):
    x, labels = nuclei
    rng = np.random.default_rng(0)
    field = smooth_field(rng, x.shape)
    outputs = [adjust_intensity(x, 3.0, 10.0, 0.6, 0.5), shade(x, 1 + 0.3 * field, 0.2), defocus(x, 2.0),
               poisson_gaussian(rng, x, 50.0, 0.02), add_blobs(rng, x, 5, (1, 4), (2, 20), labels == 0),
               add_blobs(rng, x, 2, (3, 8), (50, 60), labels == 0, flat=True)]
    for out in outputs:
        assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert field.shape == x.shape and field.dtype == np.float32
    for out in (quantize(x * 200, 8), jpeg(quantize(x * 200, 8), 50)):
        assert out.shape == x.shape and out.dtype == np.uint8
    assert jpeg(x * 200, 50).dtype == np.float32


def test_gamma_moves_the_median_of_a_ramp_and_contrast_lifts_the_background():
    ramp = np.linspace(0, 1, 1001, dtype=np.float32)[None]
    assert np.median(adjust_intensity(ramp, gamma=2.0)) == pytest.approx(0.25, abs=1e-3)
    assert np.median(adjust_intensity(ramp, gamma=0.5)) == pytest.approx(np.sqrt(0.5), abs=1e-3)
    low = adjust_intensity(ramp, contrast=0.4)
    assert low[0, 0] == pytest.approx(0.6) and low[0, -1] == pytest.approx(1.0)  # nuclei stay, background rises
    np.testing.assert_allclose(adjust_intensity(ramp, gain=4.0, offset=2.0), 2 + 4 * ramp, rtol=1e-6)
    # a linear gain and offset is what normalisation removes
    np.testing.assert_allclose(normalize(adjust_intensity(ramp, gain=7.0, offset=30.0)), normalize(ramp), atol=1e-4)


def test_smooth_field_is_bounded_and_smooth():
    field = smooth_field(np.random.default_rng(1), (256, 200))
    assert np.abs(field).max() == pytest.approx(1.0) and abs(field.mean()) < 1e-5
    assert max(np.abs(np.diff(field, axis=0)).max(), np.abs(np.diff(field, axis=1)).max()) < 0.05  # no edges


def test_blur_lowers_high_frequency_energy():
    x = np.random.default_rng(2).random((128, 128)).astype(np.float32)
    energy = [np.square(ndimage.laplace(defocus(x, s))).mean() for s in (0.0, 0.5, 1.0, 2.5)]
    assert energy == sorted(energy, reverse=True) and energy[-1] < 0.01 * energy[0]
    np.testing.assert_array_equal(defocus(x, 0.0), x)
    assert defocus(x, 2.5).mean() == pytest.approx(x.mean(), rel=1e-3)


def test_noise_has_the_poisson_gaussian_level():
    flat = np.ones((256, 256), np.float32)
    rng = np.random.default_rng(3)
    shot = poisson_gaussian(rng, flat, 100.0)
    assert shot.mean() == pytest.approx(1.0, abs=0.01) and shot.std() == pytest.approx(0.1, rel=0.05)
    both = poisson_gaussian(rng, flat, 100.0, read_noise=0.05)
    assert both.std() == pytest.approx(np.sqrt(0.1**2 + 0.05**2), rel=0.05)


def test_jpeg_at_quality_20_changes_the_image_but_keeps_its_mean(nuclei):
    x, _ = nuclei
    raw = quantize(x * 200 + 20, 8)
    low, high = jpeg(raw, 20).astype(float), jpeg(raw, 95).astype(float)
    assert np.abs(low - raw).max() > 5
    assert low.mean() == pytest.approx(raw.mean(), rel=0.03)
    assert np.abs(high - raw).mean() < np.abs(low - raw).mean()


def test_quantize_saturates_at_full_scale():
    values = np.array([[-3.0, 0.4, 100.6, 1e6]])
    np.testing.assert_array_equal(quantize(values, 8), [[0, 0, 101, 255]])
    assert quantize(values, 12).max() == 4095 and quantize(values, 16).dtype == np.uint16


def test_debris_and_saturated_blobs_never_touch_labelled_pixels(nuclei):
    x, labels = nuclei
    rng = np.random.default_rng(5)
    for flat in (False, True):
        out = add_blobs(rng, x, 10, (2.0, 5.0), (5.0, 50.0), labels == 0, flat=flat)
        np.testing.assert_array_equal(out[labels > 0], x[labels > 0])
        assert (out - x).max() > 4  # bright blobs were added on the background
    assert (add_blobs(rng, x, 3, (2.0, 3.0), (5.0, 6.0)) > x + 1).any()  # no mask: anywhere


def test_random_photometric_is_reproducible_finite_and_normalised(nuclei):
    x, labels = nuclei
    for params in (PhotometricParams(), ALL_ON):
        for seed in range(6):
            out = random_photometric(np.random.default_rng(seed), x, params, mask=labels == 0, zoom=1.5)
            assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
            assert abs(np.percentile(out, 1)) < 0.1  # normalised as at inference: background about 0
            again = random_photometric(np.random.default_rng(seed), x, params, mask=labels == 0, zoom=1.5)
            np.testing.assert_array_equal(out, again)
    assert not np.array_equal(random_photometric(np.random.default_rng(0), x, ALL_ON),
                              random_photometric(np.random.default_rng(1), x, ALL_ON))


def test_gain_offset_and_bit_depth_alone_are_normalised_away(nuclei):
    x, _ = nuclei
    params = dataclasses.replace(ALL_OFF, bits=(16,), level=(0.2, 0.9))  # never past full scale
    for seed in range(3):
        out = random_photometric(np.random.default_rng(seed), x, params)
        np.testing.assert_allclose(out, normalize(np.maximum(x, 0)), atol=2e-3)
    clipped = random_photometric(np.random.default_rng(0), x, dataclasses.replace(params, level=(1.4, 1.5)))
    assert (clipped == clipped.max()).mean() > 0.002  # saturated nuclei: flat tops, as the normalisation expects
    assert clipped.max() < 1.1  # ... which it leaves out of its high percentile, so they stay near 1


def test_wide_scale_range_is_log_uniform_and_the_default_is_the_papers():
    rng = np.random.default_rng(6)
    wide = [1 / np.sqrt(abs(np.linalg.det(random_affine(rng, AugmentParams(scale=(0.5, 2.0), log_scale=True)))))
            for _ in range(2000)]
    assert 0.5 <= min(wide) and max(wide) <= 2.0
    assert np.median(wide) == pytest.approx(1.0, abs=0.05)  # log-uniform: as many shrunk as enlarged
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    s = 1 / np.sqrt(abs(np.linalg.det(random_affine(a))))
    assert s == pytest.approx(b.uniform(0.8, 1.2))  # the paper's default: still uniform, same draw
    assert TrainConfig(scale_range=[0.5, 2]).scale_range == (0.5, 2.0)
    for bad in ((0.0, 1.0), (2.0, 1.0), (0.5,), (0.5, float("inf"))):
        with pytest.raises(HtsError, match="scale_range"):
            TrainConfig(scale_range=bad)


@pytest.fixture(scope="module")
def training_set():
    images, labels = generate_dataset(4, SyntheticConfig(shape=(128, 128)), seed=1)
    return [normalize(im) for im in images], labels


SMALL = {"width": 8, "batch_size": 4, "crop": 96, "seed": 3}


def test_photometric_batches_keep_the_labels_and_are_reproducible(training_set):
    images, labels = training_set
    zooms = [1.3, 0.8, 1.0, 1.6]
    for scale in ((0.8, 1.2), (0.5, 2.0)):
        plain = make_batch(images, labels, np.random.default_rng(9), TrainConfig(scale_range=scale, **SMALL), zooms)
        cfg = TrainConfig(scale_range=scale, photometric=True, **SMALL)
        photo = make_batch(images, labels, np.random.default_rng(9), cfg, zooms)
        again = make_batch(images, labels, np.random.default_rng(9), cfg, zooms)
        assert np.array_equal(plain.target, photo.target) and np.array_equal(plain.weight, photo.weight)
        assert all(np.array_equal(a, b) for a, b in zip(plain.boxes, photo.boxes))
        assert not np.array_equal(plain.images, photo.images) and np.isfinite(photo.images.numpy()).all()
        assert np.array_equal(photo.images, again.images) and np.array_equal(photo.target, again.target)
    # what resuming relies on: batch s depends on (seed, s) only
    cfg = TrainConfig(photometric=True, scale_range=(0.5, 2.0), steps=6, **SMALL)
    a, b = StepBatches(images, labels, cfg, zooms, 0)[4], StepBatches(images, labels, cfg, zooms, 3)[1]
    assert np.array_equal(a.images, b.images) and np.array_equal(a.target, b.target)


@pytest.mark.slow
def test_photometric_training_smoke_run(tmp_path, capsys):
    from hts.cli import main
    from hts.model.checkpoint import read_checkpoint

    out = tmp_path / "m.pt"
    argv = ["train", "--data", "synthetic", "--n-synthetic", "6", "--out", str(out), "--width", "8", "--batch-size",
            "4", "--crop", "96", "--seed", "3", "--steps", "20", "--val-every", "20", "--photometric",
            "--scale-range", "0.5", "2"]
    assert main(argv) == 0
    ckpt = read_checkpoint(out)
    assert ckpt["step"] == 20 and len(ckpt["meta"]["loss_trace"]) == 20
    assert all(np.isfinite(ckpt["meta"]["loss_trace"]))
    train = ckpt["meta"]["train"]
    assert train["photometric"] is True and tuple(train["scale_range"]) == (0.5, 2.0)
    assert ckpt["meta"]["photometric_params"]["jpeg_quality"] == (20, 95)
    capsys.readouterr()
    assert main(argv) == 0  # the same command resumes: the configuration matches its checkpoint
    assert "already trained" in capsys.readouterr().out
