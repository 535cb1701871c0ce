"""The network's nucleus-size estimate (hts.engine.size) and the plate consensus."""

from __future__ import annotations

import numpy as np
import pytest

from hts.engine.pipeline import resolve_model
from hts.engine.scale import median_diameter
from hts.engine.size import Windows, consensus, estimate_diameter
from hts.synthetic.nuclei import SyntheticConfig, generate


@pytest.fixture(scope="module")
def net():
    return resolve_model(None)


@pytest.mark.parametrize(("diameter", "side"), [(10.0, 256), (24.0, 320), (100.0, 1024)])
def test_estimate_within_a_quarter_from_10_to_100_px(net, diameter, side):
    image, labels = generate(SyntheticConfig(shape=(side, side), diameter=diameter, density=0.25 / diameter**2),
                             seed=2)
    truth = median_diameter(labels)
    est = estimate_diameter(net, image)
    assert est.diameter == pytest.approx(truth, rel=0.25), est.trials
    assert est.trials[0][0] == 240.0  # approached from above
    assert est.n_objects >= 3


def test_estimate_on_an_empty_image_is_none(net):
    est = estimate_diameter(net, np.full((200, 200), 7, np.uint16))
    assert est.diameter is None and est.n_objects == 0
    assert est.trials[-1] == (pytest.approx(4.0), None)  # halved down to the smallest trial


def test_estimate_ignores_an_empty_half_of_the_field(net):
    image, labels = generate(SyntheticConfig(shape=(512, 512), diameter=40.0, density=0.25 / 40**2), seed=3)
    image[:, :256] = np.median(image[:, 300:])  # nuclei only on the right half (background level on the left)
    labels[:, :256] = 0
    est = estimate_diameter(net, image)
    assert est.diameter == pytest.approx(median_diameter(labels), rel=0.25), est.trials


def test_windows_pick_the_foreground():
    image = np.zeros((400, 600), np.float32)
    image[300:380, 500:590] = 1.0
    rows, cols = Windows(image, (0.0, 1.0)).best(100)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (100, 100)
    assert rows.start <= 300 and rows.stop >= 350 and cols.start <= 500 and cols.stop >= 550
    assert Windows(image, (0.0, 1.0)).best(1000) == (slice(0, 400), slice(0, 600))  # clipped to the image


def test_consensus_median_spread_and_outliers():
    c = consensus({"A/1/0": 30.0, "A/2/0": 32.0, "B/1/0": 31.0, "B/2/0": 60.0, "C/1/0": None})
    assert c.diameter == pytest.approx(31.5)
    assert c.outliers == ["B/2/0"]
    assert 0 < c.spread < 0.1
    assert c.per_field["C/1/0"] is None
    empty = consensus({"A/1/0": None})
    assert empty.diameter is None and empty.outliers == []
