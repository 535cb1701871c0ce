"""Bad input gets one-line HtsErrors; normalisation; augmentation keeps image, labels and boxes consistent."""

from __future__ import annotations

import numpy as np
import pytest

import hts
from hts.engine.preprocess import (
    bright_outliers,
    check_image,
    intensity_range,
    normalize,
)
from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.model.boxes import boxes_from_labels
from hts.synthetic.nuclei import SyntheticConfig, generate
from hts.training.augment import AugmentParams, augment, warp_pair


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 4)), "2D"),
        (np.zeros(5), "2D"),
        (np.zeros((0, 5)), "empty"),
        (np.array([["a", "b"]]), "dtype"),
        (np.ones((4, 4), bool), "bool"),
        (np.array([[1.0, np.nan], [0, 0]]), "NaN"),
        (np.array([[1.0, np.inf], [0, 0]]), "NaN or infinite"),
        (np.ones((3, 3), complex), "dtype"),
    ],
)
def test_check_image_rejects(bad, match):
    with pytest.raises(HtsError, match=match):
        check_image(bad)


def test_segment_rejects_bad_input_before_the_model():
    model = InstanceUNet(ModelConfig(width=4))
    with pytest.raises(HtsError, match="NaN"):
        hts.segment(np.full((32, 32), np.nan), model)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
def test_segment_any_dtype_and_non_multiple_shape(dtype):
    image, _ = generate(SyntheticConfig(shape=(70, 90), dtype="float32"), seed=0)
    labels = hts.segment(image.astype(dtype), InstanceUNet(ModelConfig(width=4)))
    assert labels.shape == (70, 90) and labels.dtype == np.uint32


def test_min_size_zero_keeps_every_object_and_bad_values_are_refused():
    from hts.engine.infer import Prediction
    from hts.engine.pipeline import watershed_prediction

    prob = np.zeros((64, 64), np.float32)
    yy, xx = np.mgrid[:64, :64]
    prob[(yy - 30) ** 2 + (xx - 30) ** 2 <= 100] = 0.99  # a nucleus of 20 px diameter
    prob[55:58, 5:8] = 0.99  # an isolated 9 px speck (or micronucleus)
    pred = Prediction(prob, np.array([[20, 20, 40, 40], [5, 55, 8, 58]], np.float32), np.ones(2, np.float32))
    model = InstanceUNet(ModelConfig(width=4))
    assert watershed_prediction(model, pred, 20.0).max() == 1  # under 25 px: noise by default
    kept = watershed_prediction(model, pred, 20.0, min_size=0)
    assert kept.max() == 2 and kept[56, 6] > 0
    image, _ = generate(SyntheticConfig(shape=(64, 64), dtype="float32"), seed=1)
    for bad in (-1, 2.5, True):
        with pytest.raises(HtsError, match="min_size"):
            hts.segment(image, model, min_size=bad)


def test_constant_image_gives_no_nuclei_and_no_error():
    assert normalize(np.full((8, 8), 7.0)).max() == 0
    labels = hts.segment(np.full((64, 64), 300, np.uint16), InstanceUNet(ModelConfig(width=4)))
    assert labels.dtype == np.uint32


def test_normalize_percentiles():
    x = np.arange(1000, dtype=np.float32).reshape(20, 50)
    n = normalize(x)
    lo, hi = np.percentile(x, (1, 99.8))
    assert n[0, 0] == pytest.approx((0 - lo) / (hi - lo))
    assert np.percentile(n, 99.8) == pytest.approx(1.0, abs=1e-5)


def test_a_saturated_plateau_does_not_set_the_range():
    """0.5% of pixels clipped at the camera maximum (bright debris) must not darken the nuclei."""
    image, labels = generate(SyntheticConfig(shape=(256, 256), dtype="uint16", debris=0), seed=2)
    clean = normalize(image)
    hit = image.copy()
    hit[:18, :18] = np.iinfo(np.uint16).max  # 324 px = 0.5%
    norm = normalize(hit)
    np.testing.assert_allclose(norm[labels > 0].mean(), clean[labels > 0].mean(), rtol=0.05)
    assert intensity_range(hit) == pytest.approx(intensity_range(image), rel=0.05)
    assert norm[:18, :18].min() > 1  # the saturated pixels stay the brightest, above the range
    # without the rule the same pixels would take the 99.8th percentile and the nuclei would fall below 0.2
    lo, hi = np.percentile(hit, (1, 99.8))
    assert ((hit[labels > 0] - lo) / (hi - lo)).mean() < 0.2


def test_bright_unsaturated_debris_does_not_set_the_range():
    """A textured blob at ~4x the nuclei's brightness (0.5% of the image, below the maximum) is left out."""
    image, labels = generate(SyntheticConfig(shape=(256, 256), dtype="float32", debris=0), seed=2)
    clean = normalize(image)
    hit = image.copy()
    top = np.percentile(image, 99.8)
    hit[:18, :18] = 4 * top * np.random.default_rng(0).uniform(0.5, 1.0, (18, 18))
    assert np.percentile(hit, 99.8) < hit.max()  # not a saturated plateau: the older rule would not fire
    norm = normalize(hit)
    np.testing.assert_allclose(norm[labels > 0].mean(), clean[labels > 0].mean(), rtol=0.05)
    lo, hi = np.percentile(hit, (1, 99.8))
    assert ((hit[labels > 0] - lo) / (hi - lo)).mean() < 0.6 * clean[labels > 0].mean()  # what it would be
    assert bright_outliers(image.astype(np.float32), *np.percentile(image, (1, 99.8))) is None  # clean: no change


def test_two_level_images_keep_their_range():
    x = np.zeros((32, 32), np.uint8)
    x[8:16, 8:16] = 255  # everything bright sits at the maximum: nothing else to take a range from
    n = normalize(x)
    assert n.max() == pytest.approx(1.0) and n.min() == 0.0


def test_augmentation_is_consistent_for_image_labels_and_boxes():
    image, labels = generate(SyntheticConfig(shape=(128, 128), dtype="float32", debris=0), seed=4)
    rng = np.random.default_rng(0)
    norm = normalize(image)
    for _ in range(5):
        im, lb = augment(rng, norm, labels, (96, 96), AugmentParams())
        assert im.shape == lb.shape == (96, 96) and lb.dtype == labels.dtype
        assert set(np.unique(lb)) <= set(np.unique(labels))  # nearest-neighbour labels: no new ids
        if lb.any():
            inside, outside = im[lb > 0].mean(), im[lb == 0].mean()
            assert inside > outside + 0.2  # nuclei stay where the labels are
            boxes = boxes_from_labels(lb)
            ys, xs = np.nonzero(lb == np.unique(lb)[1])
            assert tuple(boxes[0]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_warp_identity_is_a_crop_and_outside_is_background():
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    labels = (image % 7).astype(np.int32)
    im, lb = warp_pair(image, labels, np.eye(2), (31.5, 31.5), (32, 32))
    np.testing.assert_allclose(im, image[16:48, 16:48], atol=1e-3)
    np.testing.assert_array_equal(lb, labels[16:48, 16:48])
    im, lb = warp_pair(image, labels, np.eye(2), (0.0, 0.0), (32, 32))  # three quarters outside
    assert (im[:15] == 0).all() and (lb[:15] == 0).all()


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 500)])
def test_images_smaller_than_a_tile_are_padded_not_refused(shape):
    image = np.random.default_rng(0).random(shape) * 1000
    for diameter in (None, 50.0):
        labels = hts.segment(image, InstanceUNet(ModelConfig(width=4)), diameter=diameter)
        assert labels.shape == shape and labels.dtype == np.uint32


def test_float_inputs_of_any_range():
    model = InstanceUNet(ModelConfig(width=4))
    base, _ = generate(SyntheticConfig(shape=(64, 64), dtype="float32"), seed=1)
    ref = hts.segment(base, model, diameter=20.0)
    for a, b in ((1e-6, 0.0), (65535.0, -7.0), (3e9, 1e9)):  # percentile normalisation: any positive affine range
        out = hts.segment(base * a + b, model, diameter=20.0)
        assert out.dtype == np.uint32
        np.testing.assert_array_equal(out > 0, ref > 0)
    assert hts.segment(-1e9 * base, model, diameter=20.0).dtype == np.uint32  # inverted contrast: no error
