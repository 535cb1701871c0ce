"""hts.engine.preprocess: bad images get one-line HtsErrors; percentile normalisation and its outlier rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hts.engine.preprocess import (
    NORM_LIMIT,
    bright_outliers,
    check_image,
    intensity_range,
    normalize,
    otsu_threshold,
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


def _debris_image(seed: int = 0) -> np.ndarray:
    """A uint16 field with a bright textured blob (the debris rule fires, so its Otsu step matters)."""
    image, _ = generate(SyntheticConfig(shape=(256, 256), dtype="uint16", photons=2000.0, debris=0), seed=seed)
    top = np.percentile(image, 99.8)
    image[:18, :18] = (4 * top * np.random.default_rng(0).uniform(0.5, 1.0, (18, 18))).astype(np.uint16)
    return image


def _units(image: np.ndarray) -> dict[str, np.ndarray]:
    """The same image in other units: huge integers, tiny floats, floats beyond float32's range."""
    return {"int64 * 2**40": image.astype(np.int64) * 2**40,
            "float64 * 1e-30": image.astype(np.float64) * 1e-30,
            "float64 * 2**900": image.astype(np.float64) * 2.0**900,
            "float32 * 2**-120": image.astype(np.float32) * np.float32(2.0**-120)}


def test_normalize_does_not_depend_on_the_units():
    """Issue 16 (9): int64 * 2**40 overflowed skimage's float32 Otsu sums (a RuntimeWarning, another range)."""
    image = _debris_image()
    ref = normalize(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, other in _units(image).items():
            exact = name != "float64 * 1e-30"  # a power-of-two scale is exact; 1e-30 rounds each pixel
            np.testing.assert_allclose(normalize(other), ref, rtol=0, atol=0 if exact else 1e-6, err_msg=name)


def test_otsu_threshold_scales_with_the_image():
    image = _debris_image().astype(np.float32)
    t = otsu_threshold(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert otsu_threshold(image * np.float32(2.0**50)) == t * 2.0**50
        assert otsu_threshold(image * np.float32(2.0**-60)) == t * 2.0**-60


def test_classical_labels_do_not_depend_on_the_units():
    from hts.engine.classical import classical_segment

    image = _debris_image(1)
    ref = classical_segment(image)
    assert ref.max() > 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, other in _units(image).items():
            np.testing.assert_array_equal(classical_segment(other), ref, err_msg=name)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                                   "float16", "float32", "float64"])
def test_no_warnings_for_any_dtype(dtype):
    """Full-range, constant and near-limit images of every dtype normalise without a stray warning."""
    from hts.engine.classical import classical_segment

    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    rng = np.random.default_rng(0)
    full = rng.uniform(float(info.min) / 2, float(info.max) / 2, (64, 64)).astype(dtype)
    full[:8, :8] = info.max
    full[-8:, -8:] = info.min
    near_top = np.full((64, 64), info.max, dtype)
    near_top[16:32, 16:32] = info.max - np.asarray(info.max, dtype) // 4 if np.dtype(dtype).kind in "iu" else info.max / 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in (full, near_top, np.zeros((64, 64), dtype), np.full((64, 64), info.max, dtype)):
            norm = normalize(image)
            assert norm.dtype == np.float32 and np.isfinite(norm).all()
            classical_segment(image)


def test_extended_precision_is_refused():
    if np.finfo(np.longdouble).bits <= 64:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(HtsError, match="extended precision"):
        check_image(np.zeros((4, 4), np.longdouble))


def test_network_labels_do_not_depend_on_the_units():
    """Issue 16 (9): as int64 * 2**40 the shipped model found 59 nuclei instead of 63, as float64 * 1e-30 none."""
    import hts

    image = _debris_image(1)
    ref = hts.segment(image)  # the diameter is measured too (hts.engine.size), in the image's units
    assert ref.max() > 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("int64 * 2**40", "float64 * 1e-30"):
            np.testing.assert_array_equal(hts.segment(_units(image)[name]), ref, err_msg=name)


def test_blocks_normalise_like_the_whole_image_in_any_units():
    """Large images are normalised block by block with the image's range (image units): an empty block too."""
    image = _debris_image().astype(np.float64) * 2.0**900
    whole = normalize(image)
    value_range = intensity_range(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(normalize(image[:64, 32:96], value_range=value_range), whole[:64, 32:96])
        empty = normalize(np.zeros((16, 16)), value_range=value_range)
    lo, hi = value_range
    np.testing.assert_allclose(empty, -lo / (hi - lo), rtol=1e-6)


def test_a_tiny_range_beside_a_huge_pixel_stays_finite():
    image = np.zeros((64, 64), np.float32)
    image[::2] = np.float32(1e-44)  # float32 subnormals: half the image
    image[0, 0] = 1e-30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm = normalize(image)
    assert np.isfinite(norm).all() and norm[0, 0] == NORM_LIMIT and norm[1, 1] == 0
