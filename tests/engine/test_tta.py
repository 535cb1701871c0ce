"""Test-time augmentation: exact inverse maps, the default path unchanged, input-frame outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hts
from hts.engine import tta as tta_mod
from hts.engine.infer import Prediction, predict, proposal_params
from hts.engine.pipeline import infer_image, segment_image
from hts.engine.preprocess import normalize
from hts.engine.scale import scale_factor
from hts.engine.tta import (
    TRANSFORMS,
    invert,
    invert_boxes,
    predict_tta,
    transform,
    transform_boxes,
)
from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.model.boxes import boxes_from_labels
from hts.synthetic.nuclei import SyntheticConfig, generate

ALL = TRANSFORMS[8]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return InstanceUNet(ModelConfig(width=4)).eval()


def test_the_transform_sets():
    assert len(set(ALL)) == 8 and set(TRANSFORMS[4]) <= set(ALL) and TRANSFORMS[1] == ((False, 0),)
    a = np.arange(12).reshape(3, 4)
    assert len({transform(a, f, k).tobytes() + bytes(transform(a, f, k).shape) for f, k in ALL}) == 8
    assert {transform(a, f, k).tobytes() for f, k in TRANSFORMS[4]} == \
        {x.tobytes() for x in (a, a[:, ::-1], a[::-1], a[::-1, ::-1])}  # the flips


@pytest.mark.parametrize("flip,k", ALL)
def test_probability_maps_invert_exactly(flip, k):
    a = np.random.default_rng(k).random((5, 7), dtype=np.float32)
    t = transform(a, flip, k)
    assert t.shape == ((5, 7) if k % 2 == 0 else (7, 5))
    assert np.array_equal(invert(t, flip, k), a)


@pytest.mark.parametrize("flip,k", ALL)
def test_box_maps_follow_the_array_transform_and_invert(flip, k):
    rng = np.random.default_rng(10 + k)
    labels = np.zeros((40, 53), np.int32)
    for i in range(1, 8):  # rectangles of random size anywhere, edges included
        y, x = rng.integers(0, 40), rng.integers(0, 53)
        labels[y : y + rng.integers(1, 12), x : x + rng.integers(1, 12)] = i
    boxes = boxes_from_labels(labels)
    assert np.array_equal(transform_boxes(boxes, labels.shape, flip, k),
                          boxes_from_labels(np.ascontiguousarray(transform(labels, flip, k))))
    floats = np.sort(rng.uniform(0, 40, (20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4).astype(np.float32)
    back = invert_boxes(transform_boxes(floats, (40, 53), flip, k), (40, 53), flip, k)
    np.testing.assert_allclose(back, floats, atol=1e-5)
    assert invert_boxes(np.zeros((0, 4), np.float32), (40, 53), flip, k).shape == (0, 4)


def test_tta1_is_the_default_path_bit_for_bit(tiny):
    image, _ = generate(SyntheticConfig(shape=(96, 120), dtype="float32"), seed=3)
    scale = scale_factor(tiny.config.diameter, 20.0)
    old = predict(tiny, normalize(image), proposal_params(tiny), scale=scale)
    for new in (infer_image(tiny, image, 20.0), infer_image(tiny, image, 20.0, tta=1),
                predict_tta(tiny, normalize(image), proposal_params(tiny), scale=scale, tta=1)):
        assert np.array_equal(new.prob, old.prob) and np.array_equal(new.boxes, old.boxes)
        assert np.array_equal(new.scores, old.scores)
    labels, _ = segment_image(tiny, image, 20.0)
    assert np.array_equal(segment_image(tiny, image, 20.0, tta=1)[0], labels)
    assert np.array_equal(hts.segment(image, tiny, diameter=20.0, tta=1), labels)


@pytest.mark.parametrize("tta", [4, 8])
def test_tta_runs_in_the_input_frame(tiny, tta):
    image, _ = generate(SyntheticConfig(shape=(70, 100), dtype="float32"), seed=4)
    pred = infer_image(tiny, image, 15.0, tta=tta)
    assert pred.prob.shape == (70, 100) and pred.prob.dtype == np.float32
    assert 0 <= pred.prob.min() and pred.prob.max() <= 1
    assert pred.boxes.shape == (len(pred.scores), 4)
    labels, _ = segment_image(tiny, image, 15.0, tta=tta)
    assert labels.shape == (70, 100) and labels.dtype == np.uint32


def test_an_equivariant_predictor_gives_back_its_own_output(monkeypatch):
    """With a stand-in network that commutes with the transforms, TTA returns one pass's output."""
    def fake_predict(model, image, params, device, scale, **kwargs):
        prob = (image > 0.5).astype(np.float32)
        boxes = boxes_from_labels(prob.astype(np.int32))
        return Prediction(prob, boxes, np.full(len(boxes), 0.9, np.float32))

    image = np.zeros((30, 44), np.float32)
    image[3:9, 20:31] = 1.0  # one off-centre, non-square "nucleus"
    monkeypatch.setattr(tta_mod, "predict", fake_predict)
    for tta in (4, 8):
        pred = predict_tta(None, image, tta=tta)
        assert np.array_equal(pred.prob, image)
        np.testing.assert_array_equal(pred.boxes, [[20, 3, 31, 9]])
        assert pred.scores.tolist() == [pytest.approx(0.9)]


def test_merged_boxes_need_a_majority_of_the_views():
    a, b, c, d = (np.array([x, 10, x + 20, 30], np.float32) for x in (0, 50, 100, 150))  # four nuclei
    speck = np.array([200, 0, 204, 4], np.float32)
    views = [([a + 1, b, c, d, speck], [0.9, 0.8, 0.7, 0.65, 0.6]), ([a, b + 1], [0.95, 0.7]),
             ([a - 1, b + [0, 0, 1, 1]], [0.9, 0.6]), ([a + 2, d + 1], [0.9, 0.9])]
    boxes = [np.stack(v).astype(np.float32) for v, _ in views]
    scores = [np.array(s, np.float32) for _, s in views]
    merged, merged_scores = tta_mod.merge_boxes(boxes, scores, 0.3)
    # a (4 of 4 views) and b (3 of 4) stay, once each with their best box; d (2 of 4), c and the speck (1) go
    np.testing.assert_array_equal(merged, [a, b])
    assert merged_scores.tolist() == [np.float32(0.95), np.float32(0.8)]
    assert merged.dtype == merged_scores.dtype == np.float32
    empty = tta_mod.merge_boxes([np.zeros((0, 4), np.float32)] * 4, [np.zeros(0, np.float32)] * 4, 0.3)
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


@pytest.mark.parametrize("bad", [0, 2, 3, 16, True, "8"])
def test_bad_tta_is_refused(tiny, bad):
    with pytest.raises(HtsError, match="tta"):
        hts.segment(np.zeros((32, 32), np.float32), tiny, diameter=20.0, tta=bad)


def test_the_command_line_takes_tta_to_every_command():
    from hts.cli import build_parser
    from hts.cli_args import run_options

    parse = build_parser().parse_args
    assert run_options(parse(["run", "p.zarr"])).tta == 1 and run_options(parse(["run", "p.zarr", "--tta", "8"])).tta == 8
    assert parse(["segment", "a.tif", "b.tif"]).tta == 1 and parse(["segment", "a.tif", "b.tif", "--tta", "4"]).tta == 4
    assert parse(["eval", "--data", "d.npz", "--tta", "8"]).tta == 8
    with pytest.raises(SystemExit):
        parse(["segment", "a.tif", "b.tif", "--tta", "2"])


def test_a_rerun_with_another_tta_is_refused():
    from types import SimpleNamespace

    from hts.screen.run import _same_settings

    earlier = {"model_sha256": "0" * 64, "channel": 0, "z": None, "min_size": None, "diameter": 20.0}  # before --tta
    settings = {k: v for k, v in earlier.items() if k != "diameter"}
    results = SimpleNamespace(path="plate.hts")
    assert _same_settings(results, earlier, settings | {"tta": 1}, None, 3, lambda m: None) == 20.0
    with pytest.raises(HtsError, match="--tta 1, this run asks 8"):
        _same_settings(results, earlier, settings | {"tta": 8}, None, 3, lambda m: None)
    assert _same_settings(results, earlier | {"tta": 8}, settings | {"tta": 8}, 20.0, 3, lambda m: None) == 20.0
