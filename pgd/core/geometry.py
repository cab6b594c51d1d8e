"""Box/point geometry shared by the PGD core (batched, pure torch)."""
from __future__ import annotations

import torch
from torch import Tensor


def check_gt(gt_boxes: Tensor, gt_valid: Tensor, name: str = "gt") -> None:
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"{name}_boxes must be (N, M, 4) x1y1x2y2, got shape {tuple(gt_boxes.shape)}")
    if gt_valid.shape != gt_boxes.shape[:2]:
        raise ValueError(f"{name}_valid must be (N, M) = {tuple(gt_boxes.shape[:2])}, got {tuple(gt_valid.shape)}")


def check_points(points: Tensor) -> None:
    if points.dim() != 2 or points.shape[-1] != 2:
        raise ValueError(f"points must be (A, 2) (x, y), got shape {tuple(points.shape)}")


def inside_boxes(points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, swap_xy: bool = False) -> Tensor:
    """(N, M, A) bool: location a strictly inside valid box m of image n.

    Strict inequalities as in the official code's validity test. `swap_xy` reproduces bug B3 (the anchor-free module
    reads points as (y, x), i.e. tests the transposed box).
    """
    check_points(points)
    check_gt(gt_boxes, gt_valid)
    xs, ys = (points[:, 1], points[:, 0]) if swap_xy else (points[:, 0], points[:, 1])
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))          # (N, M, 1)
    inside = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)               # (N, M, A)
    return inside & gt_valid.bool()[..., None]


def box_iou_aligned_grid(gt_boxes: Tensor, boxes: Tensor) -> Tensor:
    """IoU of every GT box with every prediction of the same image.

    gt_boxes (N, M, 4), boxes (N, A, ..., 4) -> (N, M, A, ...). Degenerate boxes have zero area (IoU 0).
    """
    extra = boxes.dim() - 2
    g = gt_boxes.reshape(gt_boxes.shape[:2] + (1,) * (extra - 1) + (4,)).unsqueeze(2)   # (N, M, 1, [1..], 4)
    return box_iou_pairs(g, boxes.unsqueeze(1))                                         # b: (N, 1, A, ..., 4)


def box_iou_pairs(g: Tensor, b: Tensor) -> Tensor:
    """IoU of broadcastable boxes g (..., 4) and b (..., 4), elementwise. Degenerate boxes have zero area."""
    lt = torch.maximum(g[..., :2], b[..., :2])
    rb = torch.minimum(g[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_g = (g[..., 2:] - g[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_g + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))
