"""Nucleus size: diameters, resampling, and predictions mapped back to the input frame."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from hts.engine.infer import predict
from hts.engine.scale import classical_diameter, median_diameter, rescale, scale_factor
from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.synthetic.nuclei import SyntheticConfig, generate


def test_median_diameter_of_discs():
    lab = np.zeros((100, 100), np.int32)
    for i, (r, c) in enumerate([(20, 20), (20, 60), (60, 40)], start=1):
        rr, cc = disk((r, c), 10)
        lab[rr, cc] = i
    assert median_diameter(lab) == pytest.approx(20.0, rel=0.03)
    assert median_diameter(np.zeros((5, 5), np.int32)) is None


def test_scale_factor_and_errors():
    assert scale_factor(32.0, 16.0) == 2.0
    assert scale_factor(32.0, None) == 1.0
    for bad in (0.0, -3.0, float("nan")):
        with pytest.raises(HtsError, match="diameter"):
            scale_factor(32.0, bad)


def test_rescale_shape():
    assert rescale(np.zeros((50, 40)), 2.0).shape == (100, 80)
    assert rescale(np.zeros((50, 40)), 0.5).shape == (25, 20)


@pytest.mark.parametrize("diameter", [12.0, 24.0])
def test_classical_diameter_on_synthetic(diameter):
    image, labels = generate(SyntheticConfig(shape=(256, 256), diameter=diameter), seed=7)
    truth = median_diameter(labels)
    assert classical_diameter(image) == pytest.approx(truth, rel=0.3)


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.6])
def test_predict_returns_input_frame(scale):
    model = InstanceUNet(ModelConfig(width=4))
    image = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    pred = predict(model, image, scale=scale)
    assert pred.prob.shape == (70, 90)
    if len(pred.boxes):
        assert pred.boxes[:, 2].max() <= 90 + 1e-3 and pred.boxes[:, 3].max() <= 70 + 1e-3
