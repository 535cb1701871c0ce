"""Weight map, segmentation target and the segmentation losses on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hts.training.losses import (
    VARIANTS,
    segmentation_loss,
    segmentation_target,
    soft_dice,
    weight_map,
    weighted_bce,
)


def two_touching_squares() -> np.ndarray:
    lab = np.zeros((8, 10), np.int32)
    lab[2:6, 1:5] = 1
    lab[2:6, 5:9] = 2
    return lab


def test_target_separates_touching_squares_by_one_pixel():
    t = segmentation_target(two_touching_squares())
    expected = np.zeros((8, 10), np.uint8)
    expected[2:6, 1:4] = 1  # column 4 of square 1 touches square 2 -> background
    expected[2:6, 5:9] = 1
    np.testing.assert_array_equal(t, expected)


def test_weight_map_hand_computed_two_touching_squares():
    lab = two_touching_squares()
    w = weight_map(lab, w0=10, sigma=5)
    n, n_fg = 80, 28  # target foreground: 12 + 16 px
    wc_fg, wc_bg = n / (2 * n_fg), n / (2 * (n - n_fg))
    # (2, 4): background line inside square 1, d1 = 0, d2 = 1 (square 2 is the next column)
    assert w[2, 4] == pytest.approx(wc_bg + 10 * math.exp(-1 / 50), rel=1e-5)
    # (3, 2): foreground in square 1, d1 = 0, d2 = 3
    assert w[3, 2] == pytest.approx(wc_fg + 10 * math.exp(-9 / 50), rel=1e-5)
    # (0, 0): background corner; nearest pixels (2,1) of square 1 and (2,5) of square 2
    d1, d2 = math.hypot(2, 1), math.hypot(2, 5)
    assert w[0, 0] == pytest.approx(wc_bg + 10 * math.exp(-((d1 + d2) ** 2) / 50), rel=1e-5)


def test_weight_map_single_object_is_class_balance_only():
    lab = np.zeros((6, 6), np.int32)
    lab[1:3, 1:3] = 5
    w = weight_map(lab)
    assert w[1, 1] == pytest.approx(36 / 8)
    assert w[5, 5] == pytest.approx(36 / 64)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_array_equal(weight_map(np.zeros((4, 4), np.int32)), np.ones((4, 4), np.float32))


def test_weighted_bce_tiny():
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])  # p_fg = 0.75, 0.5
    target = torch.tensor([[[1, 0]]])
    weight = torch.tensor([[[2.0, 1.0]]])
    expected = (2 * -math.log(0.75) + 1 * -math.log(0.5)) / 2
    assert weighted_bce(logits, target, weight).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_tiny():
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])  # p = 0.75, 0.5
    target = torch.tensor([[[1, 0]]])
    p = np.array([0.75, 0.5])
    y = np.array([1.0, 0.0])
    expected = 1 - 2 * (p * y).sum() / ((p**2).sum() + (y**2).sum() + 1e-6)
    assert soft_dice(logits, target).item() == pytest.approx(expected, rel=1e-6)
    perfect = torch.tensor([[[[-50.0, 50.0]], [[50.0, -50.0]]]])
    assert soft_dice(perfect, target).item() == pytest.approx(0.0, abs=1e-5)


def test_loss_variants_combine_terms():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=g)
    target = (torch.rand(2, 8, 8, generator=g) > 0.5).long()
    weight = torch.rand(2, 8, 8, generator=g) + 0.5
    bce, dice = weighted_bce(logits, target, weight), soft_dice(logits, target)
    assert segmentation_loss(logits, target, weight, VARIANTS["IU-BCE"]).item() == pytest.approx(bce.item())
    assert segmentation_loss(logits, target, weight, VARIANTS["IU-Dice"]).item() == pytest.approx(dice.item())
    assert segmentation_loss(logits, target, weight, VARIANTS["IU-BCE/Dice"]).item() == pytest.approx((bce + dice).item())
    assert not VARIANTS["U-BCE"].rpn and all(VARIANTS[k].rpn for k in ("IU-BCE", "IU-Dice", "IU-BCE/Dice"))
