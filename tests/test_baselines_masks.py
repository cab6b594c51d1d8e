"""Mask builders of the KD baselines against hand-drawn cases (boxes on tiny grids, answers worked out by hand)."""
import math

import pytest
import torch

from pgd.losses.baseline_masks import (box_iou, defeat_gt_masks, fgd_focal_masks, fgfi_imitation_mask,
                                       fpn_level_of_boxes, frs_richness, grid_points, split_levels, square_anchors)


def gt(*boxes, pad_to=None):
    """One image's padded GT: boxes + validity (padding rows are zero boxes with valid False)."""
    b = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
    m = pad_to or len(boxes)
    out = torch.zeros(1, m, 4)
    out[0, :len(boxes)] = b
    valid = torch.zeros(1, m, dtype=torch.bool)
    valid[0, :len(boxes)] = True
    return out, valid


# ------------------------------------------------------------------------------------------------------ FGD
def test_fgd_focal_mask_inclusive_region_area_and_max_over_overlaps():
    # 4x4 map of a 32x32 batch (stride 8)
    boxes, valid = gt([4, 4, 12, 20], [16, 16, 24, 24], pad_to=3)
    fg, bg = fgd_focal_masks(boxes, valid, (4, 4), [(32, 32)])
    # box 1: x' 0.5..1.5 -> cols 0..2, y' 0.5..2.5 -> rows 0..3: 12 cells of 1/12
    # box 2: x', y' 2..3 -> rows/cols 2..3: 4 cells of 1/4 (wins the overlap by the max)
    expected = torch.tensor([[1 / 12, 1 / 12, 1 / 12, 0],
                             [1 / 12, 1 / 12, 1 / 12, 0],
                             [1 / 12, 1 / 12, 1 / 4, 1 / 4],
                             [1 / 12, 1 / 12, 1 / 4, 1 / 4]])
    torch.testing.assert_close(fg[0], expected)
    exp_bg = torch.zeros(4, 4)
    exp_bg[0, 3] = exp_bg[1, 3] = 0.5          # the two background cells, normalised to sum 1
    torch.testing.assert_close(bg[0], exp_bg)


def test_fgd_focal_mask_official_img_shape_scaling_stretches_boxes():
    boxes, valid = gt([4, 4, 12, 12])
    # batch 32x32, image 16 (h) x 32 (w): fixed mapping -> x', y' 0.5..1.5: 3x3 cells
    fg_fixed, _ = fgd_focal_masks(boxes, valid, (4, 4), [(32, 32)])
    assert (fg_fixed[0] > 0).sum() == 9 and fg_fixed[0, 0, 0] == pytest.approx(1 / 9)
    # official: y scaled by 4/16 -> y' 1..3 -> rows 1..3; x by 4/32 -> cols 0..2 -> again 9 cells but shifted
    fg_off, _ = fgd_focal_masks(boxes, valid, (4, 4), [(16, 32)])
    expected = torch.zeros(4, 4)
    expected[1:, :3] = 1 / 9
    torch.testing.assert_close(fg_off[0], expected)
    assert fg_off[0, 3, 0] == pytest.approx(1 / 9) and fg_fixed[0, 3, 0] == 0


def test_fgd_focal_mask_no_boxes_gives_uniform_background():
    boxes, valid = gt([1, 1, 5, 5])
    valid[:] = False
    fg, bg = fgd_focal_masks(boxes, valid, (2, 3), [(16, 24)])
    assert fg.sum() == 0
    torch.testing.assert_close(bg, torch.full((1, 2, 3), 1 / 6))


def test_fgd_focal_mask_rejects_bad_input():
    boxes, valid = gt([1, 1, 5, 5])
    with pytest.raises(ValueError, match='gt_boxes'):
        fgd_focal_masks(boxes[0], valid, (2, 2), [(16, 16)])
    with pytest.raises(ValueError, match='scale shapes'):
        fgd_focal_masks(boxes, valid, (2, 2), [(16, 16), (16, 16)])


# --------------------------------------------------------------------------------------------------- DeFeat
def test_defeat_level_rule():
    # sqrt((w+1)(h+1)) = 55 -> log2(55/56) < 0 -> P3; 112 -> 1; 448 -> 3; huge -> clamped to the last level
    boxes = torch.tensor([[[0, 0, 54, 54], [0, 0, 111, 111], [0, 0, 447, 447], [0, 0, 3000, 3000],
                           [0, 0, 223, 223]]], dtype=torch.float32)
    assert fpn_level_of_boxes(boxes, 5).tolist() == [[0, 1, 3, 4, 2]]
    assert fpn_level_of_boxes(boxes, 3).tolist() == [[0, 1, 2, 2, 2]]


def test_defeat_cells_exclusive_upper_bound_and_degenerate_box():
    # both small boxes go to level 0 (stride 8, 4x4 map)
    boxes, valid = gt([3, 9, 20, 17], [9, 25, 10, 26])
    masks = defeat_gt_masks(boxes, valid, [(4, 4), (2, 2)], [8, 16])
    expected = torch.zeros(4, 4)
    expected[1, 0] = expected[1, 1] = 1     # rows [1, 2), cols [0, 2)
    expected[3, 1] = 1                      # degenerate: int(9/8)=1 .. int(10/8)=1 -> one cell
    torch.testing.assert_close(masks[0][0], expected)
    assert masks[1].sum() == 0              # not on the other level


def test_defeat_all_levels_option_and_padding_ignored():
    boxes, valid = gt([0, 0, 16, 16], [0, 0, 16, 16], pad_to=3)
    valid[0, 1] = False
    masks = defeat_gt_masks(boxes, valid, [(4, 4), (2, 2)], [8, 16], level_assign='all')
    assert masks[0][0].sum() == 4 and masks[0][0][:2, :2].sum() == 4
    assert masks[1][0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match='level_assign'):
        defeat_gt_masks(boxes, valid, [(4, 4)], [8], level_assign='nearest')


# ----------------------------------------------------------------------------------------------------- FGFI
def row_anchors():
    # four 8x8 anchors side by side: [0,0,8,8], [8,0,16,8], [16,0,24,8], [24,0,32,8]
    pts = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0]])
    return square_anchors(pts, torch.full((4,), 8.0), base_scale=1.0)


def test_square_anchors_sizes_and_ratios():
    a = row_anchors()
    assert a.shape == (4, 1, 4)
    torch.testing.assert_close(a[1, 0], torch.tensor([8.0, 0.0, 16.0, 8.0]))
    b = square_anchors(torch.tensor([[0.0, 0.0]]), torch.tensor([16.0]), 8.0, scales=(1.0, 2.0), ratios=(4.0,))
    # side 128 and 256; ratio 4: h = 2 side, w = side / 2
    torch.testing.assert_close(b[0], torch.tensor([[-32.0, -128.0, 32.0, 128.0], [-64.0, -256.0, 64.0, 256.0]]))


def test_fgfi_mask_psi_threshold_union_over_gts():
    boxes, valid = gt([2, 0, 10, 8], [20, 0, 32, 8], [0, 0, 32, 8], pad_to=4)
    valid[0, 2] = False                         # would cover everything if it counted
    # GT1: IoU 48/80 = 0.6 with anchor 0, 16/112 = 0.143 with anchor 1 -> M_o = 0.6, threshold 0.3
    # GT2: 32/128 = 0.25 with anchor 2, 64/96 = 0.667 with anchor 3 -> threshold 0.333
    mask = fgfi_imitation_mask(row_anchors(), boxes, valid, psi=0.5)
    assert mask.tolist() == [[1.0, 0.0, 0.0, 1.0]]
    # psi 0.2: GT1 threshold 0.12 lets anchor 1 in; GT2 threshold 0.133 lets anchor 2 in
    assert fgfi_imitation_mask(row_anchors(), boxes, valid, psi=0.2).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    iou = box_iou(boxes[0, :2], row_anchors()[:, 0])
    torch.testing.assert_close(iou[0, :2], torch.tensor([0.6, 16 / 112]))


def test_fgfi_mask_any_anchor_of_a_location_counts():
    pts = torch.tensor([[4.0, 4.0], [20.0, 4.0]])
    anchors = square_anchors(pts, torch.full((2,), 8.0), base_scale=1.0, scales=(1.0, 2.0))  # sides 8 and 16
    boxes, valid = gt([12, -4, 28, 12])        # identical to the 16-px anchor of location 1
    assert fgfi_imitation_mask(anchors, boxes, valid, psi=0.5).tolist() == [[0.0, 1.0]]


def test_fgfi_mask_level_restricted_variant():
    anchors = row_anchors()
    boxes, valid = gt([2, 0, 10, 8])
    lvl = torch.tensor([0, 0, 1, 1])
    # the GT lives on level 1: only anchors 2, 3 are usable and both have IoU 0 -> empty mask
    assert fgfi_imitation_mask(anchors, boxes, valid, 0.5, lvl, torch.tensor([[1]])).sum() == 0
    assert fgfi_imitation_mask(anchors, boxes, valid, 0.5, lvl, torch.tensor([[0]])).tolist() == [[1, 0, 0, 0]]


def test_fgfi_mask_rejects_bad_psi():
    boxes, valid = gt([2, 0, 10, 8])
    with pytest.raises(ValueError, match='psi'):
        fgfi_imitation_mask(row_anchors(), boxes, valid, psi=1.5)


# ------------------------------------------------------------------------------------------------------ FRS
def test_frs_richness_is_max_sigmoid_over_classes_and_detached():
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, -math.log(3.0)]]).view(1, 2, 1, 2).requires_grad_(True)
    r = frs_richness(z)
    torch.testing.assert_close(r, torch.tensor([[[[0.5, 0.75]]]]))
    assert not r.requires_grad


def test_grid_points_and_split_levels():
    pts, st = grid_points([(2, 2), (1, 1)], [8, 16])
    torch.testing.assert_close(pts, torch.tensor([[0.0, 0], [8, 0], [0, 8], [8, 8], [0, 0]]))
    assert st.tolist() == [8, 8, 8, 8, 16]
    parts = split_levels(torch.arange(10.0).view(2, 5), [(2, 2), (1, 1)])
    assert parts[0].shape == (2, 2, 2) and parts[1].tolist() == [[[4.0]], [[9.0]]]
