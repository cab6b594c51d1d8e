"""Eq. 1 quality score on hand-computed cases."""
import math

import pytest
import torch

from pgd.core import box_iou_aligned_grid, inside_boxes, quality_score

torch.set_num_threads(1)


def _one_box_case():
    # two locations: (5, 5) inside the GT box, (15, 5) outside; 3 classes; the GT has class 1
    points = torch.tensor([[5.0, 5.0], [15.0, 5.0]])
    gt_boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    gt_labels = torch.tensor([[1]])
    gt_valid = torch.tensor([[True]])
    cls_prob = torch.tensor([[[0.9, 0.64, 0.1], [0.2, 0.25, 0.3]]])
    # location 0 predicts the left half of the box (IoU 1/2); location 1 predicts [5,5,15,15] (IoU 25/175 = 1/7)
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 5.0], [5.0, 5.0, 15.0, 15.0]]])
    return cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid


def test_iou_hand_values():
    _, boxes, _, gt_boxes, _, _ = _one_box_case()
    iou = box_iou_aligned_grid(gt_boxes, boxes)
    assert iou.shape == (1, 1, 2)
    assert iou[0, 0].tolist() == pytest.approx([0.5, 1 / 7])


def test_quality_uses_gt_class_and_indicator():
    args = _one_box_case()
    q = quality_score(*args, xi=0.8)
    assert q.shape == (1, 1, 2)
    assert q[0, 0, 0].item() == pytest.approx(0.64 ** 0.2 * 0.5 ** 0.8)
    assert q[0, 0, 1].item() == 0.0  # outside the box
    q_all = quality_score(*args, xi=0.6, inside_indicator=False)
    assert q_all[0, 0].tolist() == pytest.approx([0.64 ** 0.4 * 0.5 ** 0.6, 0.25 ** 0.4 * (1 / 7) ** 0.6])


def test_xi_extremes():
    args = _one_box_case()
    assert quality_score(*args, xi=0.0)[0, 0, 0].item() == pytest.approx(0.64)
    assert quality_score(*args, xi=1.0)[0, 0, 0].item() == pytest.approx(0.5)


def test_extra_prediction_axis_takes_max():
    cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid = _one_box_case()
    # a second prediction per location: perfect box but low score at location 0 -> 0.1^0.2 * 1
    cls2 = torch.stack([cls_prob, torch.full_like(cls_prob, 0.1)], dim=2)          # (N, A, J, C)
    boxes2 = torch.stack([boxes, gt_boxes[:, :1].expand(1, 2, 4)], dim=2)          # (N, A, J, 4)
    q = quality_score(cls2, boxes2, points, gt_boxes, gt_labels, gt_valid, xi=0.8)
    assert q[0, 0, 0].item() == pytest.approx(max(0.64 ** 0.2 * 0.5 ** 0.8, 0.1 ** 0.2))


def test_padded_objects_and_strict_inside():
    cls_prob, boxes, points, _, _, _ = _one_box_case()
    gt_boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 20.0, 10.0]]])
    gt_labels = torch.tensor([[1, -1, 2]])
    gt_valid = torch.tensor([[True, False, True]])
    q = quality_score(cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid, xi=0.8)
    assert q[0, 1].abs().sum() == 0
    # (5, 5) lies on the left edge of box 2: strictly inside is False
    assert q[0, 2, 0] == 0 and q[0, 2, 1] > 0
    inside = inside_boxes(points, gt_boxes, gt_valid)
    assert inside[0].tolist() == [[True, False], [False, False], [False, True]]


def test_swap_xy_tests_transposed_box():
    points = torch.tensor([[2.0, 8.0]])
    box = torch.tensor([[[0.0, 5.0, 4.0, 10.0]]])   # contains (2, 8) but not (8, 2)
    valid = torch.tensor([[True]])
    assert inside_boxes(points, box, valid).item()
    assert not inside_boxes(points, box, valid, swap_xy=True).item()


def test_bad_inputs_raise():
    cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid = _one_box_case()
    with pytest.raises(ValueError, match="xi"):
        quality_score(cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid, xi=1.5)
    with pytest.raises(ValueError, match="label"):
        quality_score(cls_prob, boxes, points, gt_boxes, torch.tensor([[3]]), gt_valid, xi=0.8)
    with pytest.raises(ValueError, match="points"):
        quality_score(cls_prob, boxes, points[:, :1], gt_boxes, gt_labels, gt_valid, xi=0.8)
    with pytest.raises(ValueError, match="gt_boxes"):
        quality_score(cls_prob, boxes, points, gt_boxes[0], gt_labels, gt_valid, xi=0.8)
    assert math.isfinite(quality_score(cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid, 0.8).sum().item())
