"""Hand-computed cases for hts.training.metrics (expected values derived in comments)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hts.errors import HtsError
from hts.training import metrics as M

AP_KEYS = ["ap_50", "ap_55", "ap_60", "ap_65", "ap_70", "ap_75", "ap_80", "ap_85", "ap_90"]


def mixed_case() -> tuple[np.ndarray, np.ndarray]:
    """12x12 images: exact match, IoU 2/3, IoU 1/3, one missed gt, one false positive.

    gt 1: rows 0-2 cols 0-2 (9 px)   pred 10: identical            -> IoU 1
    gt 2: rows 5-6 cols 0-4 (10 px)  pred 20: rows 5-6 cols 1-5    -> 8 / 12 = 2/3
    gt 3: rows 9-10 cols 9-10 (4 px) no pred                       -> FN
    gt 4: rows 0-1 cols 9-10 (4 px)  pred 40: rows 0-1 cols 10-11  -> 2 / 6 = 1/3
    pred 30: rows 9-10 cols 0-1 (4 px), no gt                      -> FP
    """
    gt = np.zeros((12, 12), np.int32)
    pred = np.zeros((12, 12), np.int32)
    gt[0:3, 0:3] = 1
    pred[0:3, 0:3] = 10
    gt[5:7, 0:5] = 2
    pred[5:7, 1:6] = 20
    gt[9:11, 9:11] = 3
    gt[0:2, 9:11] = 4
    pred[0:2, 10:12] = 40
    pred[9:11, 0:2] = 30
    return gt, pred


def two_touching() -> np.ndarray:
    """Two 3x3 gt squares side by side (labels 1, 2) in an 8x8 image."""
    gt = np.zeros((8, 8), np.uint16)
    gt[1:4, 1:4] = 1
    gt[1:4, 4:7] = 2
    return gt


# ----------------------------------------------------------------------------- matching


def test_match_instances_mixed():
    gt, pred = mixed_case()
    gt_ids, pred_ids, iou = M.match_instances(gt, pred)
    assert gt_ids.tolist() == [1, 2, 3, 4]
    assert pred_ids.tolist() == [10, 20, 30, 40]
    expected = np.zeros((4, 4))
    expected[0, 0] = 1.0
    expected[1, 1] = 2 / 3
    expected[3, 3] = 1 / 3
    assert iou.dtype == np.float64
    assert iou == pytest.approx(expected)


def test_match_instances_empty_shapes():
    z = np.zeros((5, 5), np.uint8)
    g, p, iou = M.match_instances(z, z)
    assert g.size == 0 and p.size == 0 and iou.shape == (0, 0)
    pred = z.copy()
    pred[1, 1] = 7
    _, p, iou = M.match_instances(z, pred)
    assert p.tolist() == [7] and iou.shape == (0, 1)


def test_average_precision_mixed():
    gt, pred = mixed_case()
    ap = M.average_precision(gt, pred, thresholds=(0.5, 0.75))
    # t=0.5: TP = {1, 2/3} = 2, FP = 2, FN = 2 -> 2/6.  t=0.75: TP = 1 -> 1/(1+3+3).
    assert ap == pytest.approx([1 / 3, 1 / 7])
    # IoU 2/3 passes 0.65 but not 0.7; 1/3 is only a TP below 1/3.
    assert M.average_precision(gt, pred, (0.65, 0.7)) == pytest.approx([1 / 3, 1 / 7])


def test_ap_threshold_is_strict():
    gt = np.zeros((4, 4), np.int64)
    gt[0, 0:2] = 1
    pred = np.zeros((4, 4), np.int64)
    pred[0, 0] = 1  # IoU exactly 1/2
    assert M.average_precision(gt, pred, (0.5, 0.49)) == pytest.approx([0.0, 1.0])


def test_dsb_score_mixed():
    gt, pred = mixed_case()
    # AP = 1/3 for t in 0.50..0.65 (4 thresholds), 1/7 for 0.70..0.95 (6) -> (4/3 + 6/7) / 10.
    assert M.dsb_score(gt, pred) == pytest.approx(23 / 105)


def test_f1_mixed():
    gt, pred = mixed_case()
    assert M.f1(gt, pred) == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert M.f1(gt, pred, t=0.75) == pytest.approx(2 * 1 / (2 * 1 + 3 + 3))
    # Below 1/3 all three overlapping pairs count.
    assert M.f1(gt, pred, t=0.3) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_low_threshold_matching_is_one_to_one():
    # One gt (1x4) split into two preds of 1x2: IoU 0.5 each; at t=0.3 only one is a TP.
    gt = np.zeros((3, 4), np.int32)
    gt[0, :] = 1
    pred = np.zeros((3, 4), np.int32)
    pred[0, :2] = 1
    pred[0, 2:] = 2
    assert M.average_precision(gt, pred, (0.3,)) == pytest.approx([1 / (1 + 1 + 0)])


def test_aji_mixed():
    gt, pred = mixed_case()
    # C = 9 + 8 + 2 = 19; U = 9 + 12 + 6 (matched unions) + 4 (gt 3 unmatched) + 4 (pred 30 unused).
    assert M.aggregated_jaccard_index(gt, pred) == pytest.approx(19 / 35)


def test_aji_reused_pred_and_unused_pred():
    gt = two_touching()
    pred = np.zeros_like(gt)
    pred[1:4, 1:7] = 5  # merges both gts: each takes pred 5 (IoU 9/18)
    pred[6:8, 0:2] = 9  # unused, 4 px
    # C = 9 + 9; U = 18 + 18 + 4.
    assert M.aggregated_jaccard_index(gt, pred) == pytest.approx(18 / 40)


def test_aji_picks_highest_iou_pred():
    gt = np.zeros((4, 6), np.int32)
    gt[0, 0:4] = 1  # 4 px
    pred = np.zeros_like(gt)
    pred[0, 0:1] = 1  # inter 1, IoU 1/4
    pred[0, 1:6] = 2  # inter 3, union 6, IoU 1/2 -> chosen
    # C = 3, U = 6 + area(pred 1) = 7.
    assert M.aggregated_jaccard_index(gt, pred) == pytest.approx(3 / 7)


def test_pq_mixed():
    gt, pred = mixed_case()
    # TP IoUs 1 and 2/3; FP = 2, FN = 2 -> (5/3) / (2 + 1 + 1).
    assert M.panoptic_quality(gt, pred) == pytest.approx(5 / 12)


def test_pq_threshold_is_strict():
    gt = two_touching()
    merged = np.zeros_like(gt)
    merged[1:4, 1:7] = 1  # IoU exactly 0.5 with both gts: no TP
    assert M.panoptic_quality(gt, merged) == pytest.approx(0.0)
    pred = gt.copy()
    pred[1:4, 1] = 0  # gt 1: IoU 6/9, gt 2: IoU 1 -> (2/3 + 1) / 2
    assert M.panoptic_quality(gt, pred) == pytest.approx(5 / 6)


def test_count_relative_error():
    gt, pred = mixed_case()
    assert M.count_relative_error(gt, pred) == pytest.approx(0.0)
    pred2 = np.where(np.isin(pred, [30, 40]), 0, pred)
    assert M.count_relative_error(gt, pred2) == pytest.approx(2 / 4)
    empty = np.zeros_like(gt)
    assert M.count_relative_error(empty, pred) == pytest.approx(4.0)


# ----------------------------------------------------------------------------- touching


def test_touching_instances_8_connectivity():
    lab = np.zeros((10, 10), np.uint32)
    lab[0:3, 0:3] = 1
    lab[0:3, 3:6] = 2  # 4-adjacent to 1
    lab[3:5, 6:8] = 3  # touches 2 only diagonally ((2,5)-(3,6))
    lab[8:10, 0:2] = 4  # isolated
    lab[6, 9] = 5  # anti-diagonal pair 5/6
    lab[7, 8] = 6
    lab[9, 9] = 7  # isolated single pixel
    out = M.touching_instances(lab)
    assert out.tolist() == [1, 2, 3, 5, 6]
    assert out.dtype == np.uint32


def test_touching_instances_none():
    lab = np.zeros((5, 5), np.int32)
    lab[0, 0] = 1
    lab[0, 2] = 2
    lab[4, 4] = 3
    assert M.touching_instances(lab).tolist() == []


def test_instance_error_merged():
    gt = two_touching()
    pred = np.zeros_like(gt)
    pred[1:4, 1:7] = 1  # IoU 0.5 with each: neither separated
    assert M.instance_error(gt, pred) == (2, 2)
    assert M.evaluate_image(gt, pred)["instance_error"] == pytest.approx(1.0)


def test_instance_error_separated():
    gt = two_touching()
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0)).astype(np.uint16)
    pred[1, 4] = 7  # one pixel stolen: still IoU > 0.5 for both
    assert M.instance_error(gt, pred) == (2, 0)
    assert M.evaluate_image(gt, pred)["instance_error"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- pixel metrics


def pixel_case() -> tuple[np.ndarray, np.ndarray]:
    g = np.zeros((4, 4), bool)
    g[0, 0:4] = True  # 4 fg
    p = np.zeros((4, 4), bool)
    p[0, 0:3] = True  # 3 of them
    p[3, 3] = True  # one extra
    return g, p


def test_pixel_error_and_mean_iu():
    g, p = pixel_case()
    assert M.pixel_error(g, p) == pytest.approx(2 / 16)
    # fg IoU 3/5; bg: gt bg 12, pred bg 12, common 11, union 13.
    assert M.mean_iu(g, p) == pytest.approx((3 / 5 + 11 / 13) / 2)
    assert M.mean_iu(g.astype(np.uint8), p.astype(np.int64)) == pytest.approx((3 / 5 + 11 / 13) / 2)


def test_mean_iu_absent_class_counts_as_one():
    z = np.zeros((3, 3), bool)
    assert M.mean_iu(z, z) == pytest.approx(1.0)
    assert M.mean_iu(~z, ~z) == pytest.approx(1.0)
    assert M.mean_iu(z, ~z) == pytest.approx(0.0)
    assert M.pixel_error(z, ~z) == pytest.approx(1.0)


def test_rmse():
    g = np.array([[1, 0], [0, 0]], bool)
    prob = np.array([[0.5, 0.5], [0.0, 0.0]], np.float32)
    assert M.rmse(g, prob) == pytest.approx(np.sqrt((0.25 + 0.25) / 4))
    assert M.rmse(g, g.astype(np.float64)) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- evaluate


def test_perfect_prediction():
    gt, _ = mixed_case()
    r = M.evaluate_image(gt, gt, prob=(gt > 0).astype(np.float32))
    for k in AP_KEYS + ["dsb_score", "f1_50", "aji", "pq", "mean_iu"]:
        assert r[k] == pytest.approx(1.0), k
    for k in ["pixel_error", "count_rel_error", "instance_error", "rmse"]:
        assert r[k] == pytest.approx(0.0), k
    assert r["n_gt"] == 4 and r["n_pred"] == 4


def test_evaluate_image_mixed():
    gt, pred = mixed_case()
    r = M.evaluate_image(gt, pred)
    assert r["ap_50"] == pytest.approx(1 / 3)
    assert r["ap_65"] == pytest.approx(1 / 3)
    assert r["ap_70"] == pytest.approx(1 / 7)
    assert r["ap_75"] == pytest.approx(1 / 7)
    assert r["ap_90"] == pytest.approx(1 / 7)
    assert r["dsb_score"] == pytest.approx(23 / 105)
    assert r["f1_50"] == pytest.approx(0.5)
    assert r["aji"] == pytest.approx(19 / 35)
    assert r["pq"] == pytest.approx(5 / 12)
    # fg: gt 27 px, pred 27 px, common 9 + 8 + 2 = 19 -> differ 16 of 144.
    assert r["pixel_error"] == pytest.approx(16 / 144)
    assert r["mean_iu"] == pytest.approx((19 / 35 + 109 / 125) / 2)
    assert "rmse" not in r


def test_empty_empty():
    z = np.zeros((6, 6), np.uint16)
    r = M.evaluate_image(z, z, prob=np.zeros((6, 6)))
    for k in AP_KEYS + ["dsb_score", "f1_50", "aji", "pq", "mean_iu"]:
        assert r[k] == pytest.approx(1.0), k
    for k in ["pixel_error", "count_rel_error", "instance_error", "rmse"]:
        assert r[k] == pytest.approx(0.0), k
    assert (r["n_gt"], r["n_pred"], r["n_touching"]) == (0, 0, 0)


def test_one_side_empty():
    gt, pred = mixed_case()
    z = np.zeros_like(gt)
    for a, b in [(gt, z), (z, pred)]:
        r = M.evaluate_image(a, b)
        for k in AP_KEYS + ["dsb_score", "f1_50", "aji", "pq"]:
            assert r[k] == pytest.approx(0.0), k


def test_label_permutation_invariance():
    gt, pred = mixed_case()
    ref = M.evaluate_image(gt, pred)
    mapping = {10: 4_000_000_000, 20: 7, 30: 65_536, 40: 1}
    pred2 = np.zeros(pred.shape, np.uint32)
    for old, new in mapping.items():
        pred2[pred == old] = new
    gt2 = np.where(gt > 0, 100 - gt, 0).astype(np.int64)  # reverse order, non-sequential
    r = M.evaluate_image(gt2, pred2)
    assert r.keys() == ref.keys()
    for k in ref:
        assert r[k] == pytest.approx(ref[k]), k


def test_non_sequential_labels_and_dtypes():
    gt = np.zeros((10, 10), np.uint16)
    gt[0:3, 0:3] = 3
    gt[5:8, 5:8] = 17
    gt[0:2, 7:9] = 200
    pred = gt.astype(np.uint32) * 1000
    gt_ids, pred_ids, iou = M.match_instances(gt, pred)
    assert gt_ids.tolist() == [3, 17, 200]
    assert pred_ids.tolist() == [3000, 17000, 200000]
    assert iou == pytest.approx(np.eye(3))
    assert M.dsb_score(gt, pred) == pytest.approx(1.0)
    assert M.count_relative_error(gt, pred) == pytest.approx(0.0)


def test_evaluate_dataset_aggregation():
    gt_a, pred_a = mixed_case()
    gt_b = two_touching()
    pred_b = np.zeros_like(gt_b)
    pred_b[1:4, 1:7] = 1  # merged
    gt_c = two_touching()
    pred_c = gt_c.copy()  # perfect
    probs = [(gt_a > 0).astype(float), np.full(gt_b.shape, 0.5), (gt_c > 0).astype(float)]
    out = M.evaluate_dataset([gt_a, gt_b, gt_c], [pred_a, pred_b, pred_c], probs)
    expected_keys = set(AP_KEYS) | {
        "pixel_error", "mean_iu", "instance_error", "dsb_score", "f1_50", "aji", "pq",
        "count_rel_error", "n_images", "n_gt", "n_pred", "n_touching", "rmse",
    }
    assert set(out) == expected_keys
    json.dumps(out)
    assert all(type(v) in (int, float) for v in out.values())
    assert (out["n_images"], out["n_gt"], out["n_pred"], out["n_touching"]) == (3, 8, 7, 4)
    # Not separated: 0 (a has no touching gts) + 2 (merged) + 0 -> 2 / 4.
    assert out["instance_error"] == pytest.approx(0.5)
    # Per-image AP@0.5: 1/3, 0 (merge IoU 0.5 is not > 0.5), 1.
    assert out["ap_50"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    # AJI: 19/35; merged 18/36; perfect 1.
    assert out["aji"] == pytest.approx((19 / 35 + 0.5 + 1) / 3)
    # count: 0, |1-2|/2, 0.
    assert out["count_rel_error"] == pytest.approx(0.5 / 3)
    # rmse per image: 0, 0.5, 0.
    assert out["rmse"] == pytest.approx(0.5 / 3)
    assert "rmse" not in M.evaluate_dataset([gt_a], [pred_a])


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises():
    gt, pred = mixed_case()
    with pytest.raises(HtsError, match="gt"):
        M.match_instances(gt.astype(float), pred)
    with pytest.raises(HtsError, match="pred"):
        M.dsb_score(gt, pred.astype(np.float32))
    with pytest.raises(HtsError, match="pred"):
        M.evaluate_image(gt, pred[:5])
    with pytest.raises(HtsError, match="gt"):
        M.aggregated_jaccard_index(gt[None], pred[None])
    with pytest.raises(HtsError, match="gt"):
        M.panoptic_quality(-gt, pred)
    with pytest.raises(HtsError, match="labels"):
        M.touching_instances(np.zeros(5, np.int32))
    with pytest.raises(HtsError, match="thresholds"):
        M.average_precision(gt, pred, (0.5, 1.5))
    with pytest.raises(HtsError, match="prob"):
        M.rmse(gt > 0, np.full(gt.shape, 1.5))
    with pytest.raises(HtsError, match="pred_fg"):
        M.pixel_error(gt > 0, np.zeros(gt.shape, np.float32))
    with pytest.raises(HtsError, match="preds"):
        M.evaluate_dataset([gt, gt], [pred])
    with pytest.raises(HtsError, match="gts"):
        M.evaluate_dataset([], [])
    assert issubclass(HtsError, ValueError)


def test_centroid_recall_counts():
    from hts.training.metrics import centroid_recall

    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1
    gt[0:4, 6:10] = 2
    gt[6:10, 0:4] = 3
    c = np.array([[1.5, 1.5], [2.5, 2.5], [7.0, 1.0], [8.0, 8.0]])  # two in 1, one in 2, none in 3, one stray
    assert centroid_recall(gt, c) == {"n_gt": 3, "hit": 2, "single": 1, "split": 1, "stray": 1}


def test_reproduced_per_id_at_an_iou_threshold():
    gt, pred = mixed_case()  # IoUs 1, 2/3, none, 1/3 for gt 1-4
    ids = np.array([1, 2, 3, 4, 99])  # 99: not in the reference
    assert M.reproduced(gt, pred, ids, 0.9).tolist() == [True, False, False, False, False]
    assert M.reproduced(gt, pred, ids, 0.5).tolist() == [True, True, False, False, False]
    assert M.reproduced(gt, pred, ids, 0.3).tolist() == [True, True, False, True, False]
    with pytest.raises(HtsError, match="iou_min"):
        M.reproduced(gt, pred, ids, 1.5)
