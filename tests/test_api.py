"""The public API: ``hts.segment`` refuses bad input with one-line HtsErrors and takes any dtype, shape and range."""

from __future__ import annotations

import numpy as np
import pytest

import hts
from hts.engine.preprocess import normalize
from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.synthetic.nuclei import SyntheticConfig, generate


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
