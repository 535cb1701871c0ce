"""Model heads, anchors, box coder, NMS and the RPN losses."""

from __future__ import annotations

import pytest
import torch

from hts.errors import HtsError
from hts.model import InstanceUNet, ModelConfig
from hts.model.anchors import cell_anchors, grid_anchors
from hts.model.boxes import BoxCoder, box_iou, boxes_from_labels, nms
from hts.model.rpn import MatchParams, match_anchors, proposals, rpn_loss


@pytest.mark.parametrize("shape", [(448, 448), (160, 96)])
def test_head_shapes(shape):
    h, w = shape
    model = InstanceUNet(ModelConfig(width=4)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    a = (h // 16) * (w // 16) * 9
    assert out["logits"].shape == (2, 2, h, w)
    assert out["rpn_logits"].shape == (2, a, 2)
    assert out["rpn_deltas"].shape == (2, a, 4)
    assert out["anchors"].shape == (a, 4)


def test_paper_width_feature_map_is_28x28x512():
    model = InstanceUNet(ModelConfig(width=64)).eval()
    with torch.no_grad():
        features, skips = model.encoder(torch.randn(1, 1, 448, 448))
    assert features.shape == (1, 512, 28, 28)
    assert [s.shape[1] for s in skips] == [64, 128, 256, 512]
    assert [s.shape[-1] for s in skips] == [448, 224, 112, 56]


def test_plain_unet_has_no_rpn_outputs():
    model = InstanceUNet(ModelConfig(width=4, rpn=False)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 64, 64))
    assert set(out) == {"logits"}
    assert model.rpn is None


@pytest.mark.parametrize("shape", [(1, 1, 100, 64), (1, 3, 64, 64), (64, 64)])
def test_bad_input_shape_is_a_clear_error(shape):
    with pytest.raises(HtsError, match="multiple|input must be"):
        InstanceUNet(ModelConfig(width=4))(torch.randn(*shape))


def test_cell_anchors_sizes_and_ratios():
    a = cell_anchors(32.0)
    assert a.shape == (9, 4)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    torch.testing.assert_close(w * h, torch.tensor([16.0**2] * 3 + [32.0**2] * 3 + [64.0**2] * 3))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 3))
    torch.testing.assert_close((a[:, 0] + a[:, 2]) / 2, torch.zeros(9))


def test_grid_anchors_order_matches_head_layout():
    anchors = grid_anchors((2, 3), 16, 32.0).view(2, 3, 9, 4)
    centre = (anchors[..., :2] + anchors[..., 2:]) / 2
    # feature pixel (i=1, j=2) is centred at x = 2.5 * 16, y = 1.5 * 16 for all 9 anchors
    torch.testing.assert_close(centre[1, 2], torch.tensor([[40.0, 24.0]] * 9))


def test_box_coder_round_trip():
    g = torch.Generator().manual_seed(1)
    anchors = grid_anchors((4, 4), 16, 24.0)
    xy = torch.rand(anchors.shape[0], 2, generator=g) * 60
    wh = torch.rand(anchors.shape[0], 2, generator=g) * 40 + 2
    boxes = torch.cat((xy, xy + wh), 1)
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-4, rtol=1e-5)
    # zero offsets decode to the anchors themselves
    torch.testing.assert_close(coder.decode(torch.zeros_like(anchors), anchors), anchors)


def brute_force_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        if all(float(box_iou(boxes[i : i + 1], boxes[j : j + 1])) <= thr for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(80, 2, generator=g) * 100
    wh = torch.rand(80, 2, generator=g) * 30 + 5
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(80, generator=g)
    assert nms(boxes, scores, 0.3).tolist() == brute_force_nms(boxes, scores, 0.3)


def test_nms_many_small_boxes_matches_brute_force():
    g = torch.Generator().manual_seed(9)
    xy = torch.rand(600, 2, generator=g) * 400
    wh = torch.rand(600, 2, generator=g) * 25 + 3
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(600, generator=g)
    scores[:50] = 0.5  # ties
    assert nms(boxes, scores, 0.3).tolist() == brute_force_nms(boxes, scores, 0.3)


def test_nms_empty():
    assert nms(torch.zeros((0, 4)), torch.zeros(0)).numel() == 0


def test_boxes_from_labels():
    import numpy as np

    lab = np.zeros((10, 12), np.uint16)
    lab[2:5, 3:7] = 1
    lab[6:9, 0:2] = 3
    np.testing.assert_array_equal(boxes_from_labels(lab), [[3, 2, 7, 5], [0, 6, 2, 9]])
    assert boxes_from_labels(np.zeros((4, 4), int)).shape == (0, 4)


def test_match_anchors_every_gt_gets_a_positive():
    anchors = grid_anchors((4, 4), 16, 32.0)
    gt = torch.tensor([[3.0, 3.0, 13.0, 13.0], [30.0, 30.0, 52.0, 50.0]])  # a small box below fg_iou
    labels, matched = match_anchors(anchors, gt, MatchParams())
    for g in range(2):
        assert ((labels == 1) & (matched == g)).any()
    iou = box_iou(gt, anchors).max(0).values
    low = iou < 0.3
    assert (labels[low] == 1).sum() <= 2  # only anchors claimed as a box's best may be positive below bg_iou
    assert (labels[low & (labels != 1)] == 0).all()
    assert (labels[iou >= 0.5] == 1).all()
    assert (labels[(iou >= 0.3) & (iou < 0.5) & (labels != 1)] == -1).all()


def test_rpn_loss_is_low_for_perfect_predictions():
    anchors = grid_anchors((4, 4), 16, 32.0)
    gt = [torch.tensor([[8.0, 8.0, 40.0, 40.0]])]
    labels, matched = match_anchors(anchors, gt[0], MatchParams())
    perfect_logits = torch.stack((torch.where(labels == 1, -20.0, 20.0), torch.where(labels == 1, 20.0, -20.0)), 1)
    perfect_deltas = BoxCoder().encode(gt[0][matched], anchors)
    cls, reg = rpn_loss(perfect_logits[None], perfect_deltas[None], anchors, gt)
    assert cls.item() < 1e-6 and reg.item() < 1e-6
    cls_bad, reg_bad = rpn_loss(-perfect_logits[None], torch.zeros_like(perfect_deltas)[None], anchors, gt)
    assert cls_bad.item() > 10 and reg_bad.item() > 0


def test_rpn_loss_without_objects_has_zero_regression_and_gradients():
    anchors = grid_anchors((2, 2), 16, 32.0)
    logits = torch.zeros(1, anchors.shape[0], 2, requires_grad=True)
    deltas = torch.zeros(1, anchors.shape[0], 4, requires_grad=True)
    cls, reg = rpn_loss(logits, deltas, anchors, [torch.zeros((0, 4))])
    assert cls.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-5)
    assert reg.item() == 0
    (cls + reg).backward()
    assert logits.grad is not None


def test_proposals_threshold_and_nms():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [30.0, 30.0, 40.0, 40.0], [50.0, 0.0, 60.0, 10.0]])
    logits = torch.tensor([[[0.0, 3.0], [0.0, 2.0], [0.0, 1.0], [0.0, -3.0]]])
    (boxes, scores), = proposals(logits, torch.zeros(1, 4, 4), anchors, (64, 64))
    torch.testing.assert_close(boxes, anchors[[0, 2]])  # #1 suppressed (IoU 0.68), #3 below 0.5
    assert scores[0] > scores[1]
