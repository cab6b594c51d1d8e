"""Eq. 1: the prediction quality score q = 1[X in b] * p^(1-xi) * IoU(b, b_hat)^xi."""
from __future__ import annotations

import torch
from torch import Tensor

from .geometry import box_iou_aligned_grid, check_gt, check_points, inside_boxes


def quality_score(cls_prob: Tensor, boxes: Tensor, points: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                  gt_valid: Tensor, xi: float, inside_indicator: bool = True, swap_xy: bool = False) -> Tensor:
    """Quality of every location w.r.t. every GT object, (N, M, A).

    cls_prob: (N, A, C) class probabilities, or (N, A, J, C) for J predictions per location; boxes: (N, A, 4) or
    (N, A, J, 4) decoded x1y1x2y2. With J the location's quality is the max over its J predictions (Sec. 3.1).
    p is the probability of the GT's own class only (docs/methods.md §1.9 Q7). Padded objects (gt_valid False) score 0.
    inside_indicator=False drops the 1[X in b] factor (the official code ranks without it, docs/methods.md §1.9 Q1).
    """
    check_points(points)
    check_gt(gt_boxes, gt_valid)
    if not 0.0 <= xi <= 1.0:
        raise ValueError(f"quality_score: xi must lie in [0, 1], got {xi}")
    if cls_prob.dim() == 3:
        cls_prob, boxes = cls_prob.unsqueeze(2), boxes.unsqueeze(2)
    if cls_prob.dim() != 4 or boxes.dim() != 4 or boxes.shape[-1] != 4:
        raise ValueError(f"quality_score: cls_prob must be (N, A, [J,] C) and boxes (N, A, [J,] 4), got "
                         f"{tuple(cls_prob.shape)} and {tuple(boxes.shape)}")
    n, a, j, c = cls_prob.shape
    if boxes.shape[:3] != (n, a, j) or points.shape[0] != a or gt_boxes.shape[0] != n:
        raise ValueError(f"quality_score: inconsistent shapes cls_prob {tuple(cls_prob.shape)}, boxes "
                         f"{tuple(boxes.shape)}, points {tuple(points.shape)}, gt_boxes {tuple(gt_boxes.shape)}")
    if gt_labels.shape != gt_valid.shape:
        raise ValueError(f"quality_score: gt_labels {tuple(gt_labels.shape)} must match gt_valid "
                         f"{tuple(gt_valid.shape)}")
    valid = gt_valid.bool()
    labels = gt_labels.long()
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() >= c):
        raise ValueError(f"quality_score: a valid GT label lies outside [0, {c}) for {c} classes")
    m = gt_boxes.shape[1]

    labels = torch.where(valid, labels, torch.zeros_like(labels))
    index = labels[:, :, None, None].expand(n, m, a, j)
    prob = cls_prob.permute(0, 3, 1, 2).gather(1, index).clamp(0.0, 1.0)        # (N, M, A, J)
    iou = box_iou_aligned_grid(gt_boxes.to(boxes.dtype), boxes)                   # (N, M, A, J)
    q = prob.pow(1.0 - xi) * iou.pow(xi)
    q = q.amax(dim=-1)
    keep = valid[..., None]
    if inside_indicator:
        keep = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy)
    return q * keep.to(q.dtype)
