"""hts.engine.preprocess: bad images get one-line HtsErrors; percentile normalisation and its outlier rules."""

from __future__ import annotations

import numpy as np
import pytest

from hts.engine.preprocess import (
    bright_outliers,
    check_image,
    intensity_range,
    normalize,
)
from hts.errors import HtsError
from hts.synthetic.nuclei import SyntheticConfig, generate


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
