"""Region masks of the KD baselines (FGD, DeFeat, FGFI, FRS), batched over images, objects and levels.

Pure torch: every builder takes padded GT tensors ``gt_boxes`` (N, M, 4) x1y1x2y2 in input pixels and ``gt_valid``
(N, M) bool (see :func:`pgd.losses.base.pad_gt`) and returns float masks; the loss modules only combine them with
features. Conventions are those of each method's official code (docs/baselines.md).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _check_gt(gt_boxes: Tensor, gt_valid: Tensor) -> None:
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f'gt_boxes must be (N, M, 4), got {tuple(gt_boxes.shape)}')
    if gt_valid.shape != gt_boxes.shape[:2] or gt_valid.dtype != torch.bool:
        raise ValueError(f'gt_valid must be a bool tensor of shape {tuple(gt_boxes.shape[:2])}, '
                         f'got {gt_valid.dtype} {tuple(gt_valid.shape)}')


def _grid(h: int, w: int, device) -> tuple[Tensor, Tensor]:
    rows = torch.arange(h, device=device).view(1, 1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, 1, w)
    return rows, cols


# --------------------------------------------------------------------------------------------------------- FGD
def fgd_focal_masks(gt_boxes: Tensor, gt_valid: Tensor, feat_size: tuple[int, int],
                    scale_shapes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """FGD's foreground / background masks on one (H, W) feature map.

    ``scale_shapes`` holds, per image, the (h, w) in pixels that the feature map is taken to span: the batch input
    shape for the fixed mapping (x * W / batch_w), or the image's own ``img_shape`` for the official FGD behaviour
    (which stretches boxes of images smaller than the padded batch).

    A box covers the inclusive cells rows floor(y1')..ceil(y2') x cols floor(x1')..ceil(x2') with value
    1 / ((hmax - hmin + 1) (wmax - wmin + 1)); overlapping boxes keep the max; the area counts the full box even
    where the grid truncates it (as the official slicing does). Background = 1[fg == 0] normalised to sum 1 per
    image (left all-zero when an image has no background cell).
    Returns (fg, bg), each (N, H, W).
    """
    _check_gt(gt_boxes, gt_valid)
    n, h, w = gt_boxes.shape[0], int(feat_size[0]), int(feat_size[1])
    if len(scale_shapes) != n:
        raise ValueError(f'fgd_focal_masks: {len(scale_shapes)} scale shapes for {n} images')
    sh = torch.as_tensor([[float(s[0]), float(s[1])] for s in scale_shapes], device=gt_boxes.device)
    if (sh <= 0).any():
        raise ValueError(f'fgd_focal_masks: non-positive image shape in {list(scale_shapes)}')
    sy = (h / sh[:, 0]).view(n, 1)
    sx = (w / sh[:, 1]).view(n, 1)
    b = gt_boxes.float()
    wmin = torch.floor(b[..., 0] * sx)
    wmax = torch.ceil(b[..., 2] * sx)
    hmin = torch.floor(b[..., 1] * sy)
    hmax = torch.ceil(b[..., 3] * sy)
    area = 1.0 / ((hmax - hmin + 1) * (wmax - wmin + 1))                                   # (N, M)
    rows, cols = _grid(h, w, b.device)
    inside = ((rows >= hmin[..., None, None]) & (rows <= hmax[..., None, None])
              & (cols >= wmin[..., None, None]) & (cols <= wmax[..., None, None])
              & gt_valid[..., None, None])                                                # (N, M, H, W)
    fg = torch.where(inside, area[..., None, None], torch.zeros((), device=b.device)).amax(dim=1) \
        if gt_boxes.shape[1] > 0 else b.new_zeros(n, h, w)
    bg = (fg == 0).float()
    bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    return fg, bg


# ------------------------------------------------------------------------------------------------------ DeFeat
def fpn_level_of_boxes(gt_boxes: Tensor, num_levels: int, canonical_scale: float = 56.0) -> Tensor:
    """DeFeat's level rule: clamp(floor(log2(sqrt((w + 1)(h + 1)) / canonical_scale)), 0, L - 1); (N, M) long."""
    w = gt_boxes[..., 2] - gt_boxes[..., 0]
    h = gt_boxes[..., 3] - gt_boxes[..., 1]
    scale = torch.sqrt((w + 1).clamp_min(1e-6) * (h + 1).clamp_min(1e-6))
    lvl = torch.floor(torch.log2(scale / canonical_scale))
    return lvl.clamp(0, num_levels - 1).long()


def defeat_gt_masks(gt_boxes: Tensor, gt_valid: Tensor, level_sizes: Sequence[tuple[int, int]],
                    strides: Sequence[int], level_assign: str = 'fpn_rule',
                    canonical_scale: float = 56.0) -> list[Tensor]:
    """DeFeat's binary GT masks, one (N, H_l, W_l) per level.

    A box covers cells [int(y1/s), int(y2/s)) x [int(x1/s), int(x2/s)) (exclusive upper bound); an axis whose range
    is empty keeps one cell, so a degenerate box still marks a cell. ``level_assign='fpn_rule'`` puts each box on
    the one level of :func:`fpn_level_of_boxes`; ``'all'`` marks every box on every level (our option).
    """
    _check_gt(gt_boxes, gt_valid)
    if len(level_sizes) != len(strides):
        raise ValueError(f'defeat_gt_masks: {len(level_sizes)} level sizes but {len(strides)} strides')
    if level_assign not in ('fpn_rule', 'all'):
        raise ValueError(f"defeat_gt_masks: level_assign must be 'fpn_rule' or 'all', got {level_assign!r}")
    num_levels = len(level_sizes)
    lvl = fpn_level_of_boxes(gt_boxes, num_levels, canonical_scale)
    masks = []
    for l, ((h, w), s) in enumerate(zip(level_sizes, strides)):   # loop over the (<= 5) levels only
        b = gt_boxes.float() / float(s)
        c0, r0 = b[..., 0].floor(), b[..., 1].floor()
        c1 = torch.maximum(b[..., 2].floor(), c0 + 1)
        r1 = torch.maximum(b[..., 3].floor(), r0 + 1)
        keep = gt_valid if level_assign == 'all' else gt_valid & (lvl == l)
        rows, cols = _grid(int(h), int(w), b.device)
        inside = ((rows >= r0[..., None, None]) & (rows < r1[..., None, None])
                  & (cols >= c0[..., None, None]) & (cols < c1[..., None, None]) & keep[..., None, None])
        masks.append(inside.any(dim=1).float())
    return masks


# -------------------------------------------------------------------------------------------------------- FGFI
def square_anchors(points: Tensor, point_strides: Tensor, base_scale: float = 8.0,
                   scales: Sequence[float] = (1.0,), ratios: Sequence[float] = (1.0,)) -> Tensor:
    """Anchors centred on ``points`` (A, 2): side base_scale * stride * scale, aspect h/w = ratio (mmdet's
    convention h = side * sqrt(r), w = side / sqrt(r)). Returns (A, K, 4) with K = len(scales) * len(ratios)."""
    sc = torch.as_tensor(list(scales), dtype=torch.float32, device=points.device)
    ra = torch.as_tensor(list(ratios), dtype=torch.float32, device=points.device)
    side = base_scale * point_strides.float()[:, None, None] * sc[None, None, :]         # (A, 1, S)
    hw = side * torch.sqrt(ra)[None, :, None]                                            # (A, R, S)
    ww = side / torch.sqrt(ra)[None, :, None]
    hw, ww = hw.reshape(len(points), -1), ww.reshape(len(points), -1)
    cx, cy = points[:, 0:1].float(), points[:, 1:2].float()
    return torch.stack([cx - ww / 2, cy - hw / 2, cx + ww / 2, cy + hw / 2], dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise IoU, batched: (..., P, 4) x (..., Q, 4) -> (..., P, Q)."""
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    a1 = (boxes1[..., 2] - boxes1[..., 0]).clamp_min(0) * (boxes1[..., 3] - boxes1[..., 1]).clamp_min(0)
    a2 = (boxes2[..., 2] - boxes2[..., 0]).clamp_min(0) * (boxes2[..., 3] - boxes2[..., 1]).clamp_min(0)
    return inter / (a1[..., :, None] + a2[..., None, :] - inter).clamp_min(eps)


def fgfi_imitation_mask(anchors: Tensor, gt_boxes: Tensor, gt_valid: Tensor, psi: float = 0.5,
                        anchor_level: Tensor | None = None, gt_level: Tensor | None = None) -> Tensor:
    """FGFI's fine-grained imitation mask, (N, A) in {0, 1}.

    ``anchors`` (A, K, 4): K anchors per location. For each GT, M_o = max IoU over all anchors it may use; a location
    is positive if any of its anchors has IoU > psi * M_o for any GT (union over GTs). With ``anchor_level`` (A,)
    and ``gt_level`` (N, M) a GT only uses the anchors of its own level (DeFeat's FPN variant).
    """
    _check_gt(gt_boxes, gt_valid)
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f'FGFI psi must lie in [0, 1], got {psi}')
    if anchors.dim() != 3 or anchors.shape[-1] != 4:
        raise ValueError(f'anchors must be (A, K, 4), got {tuple(anchors.shape)}')
    n, m = gt_valid.shape
    a, k = anchors.shape[:2]
    iou = box_iou(gt_boxes.float(), anchors.reshape(1, a * k, 4).expand(n, -1, -1).float())   # (N, M, A*K)
    iou = iou.view(n, m, a, k)
    usable = gt_valid[..., None, None].expand(n, m, a, k)
    if anchor_level is not None or gt_level is not None:
        if anchor_level is None or gt_level is None:
            raise ValueError('fgfi_imitation_mask: give both anchor_level and gt_level, or neither')
        usable = usable & (anchor_level.view(1, 1, a, 1) == gt_level.view(n, m, 1, 1))
    iou = torch.where(usable, iou, torch.full_like(iou, -1.0))
    m_o = iou.flatten(2).amax(dim=2).clamp_min(0.0)                                        # (N, M)
    pos = (iou > psi * m_o[..., None, None]) & (m_o[..., None, None] > 0) & usable
    return pos.any(dim=3).any(dim=1).float()


# --------------------------------------------------------------------------------------------------------- FRS
def frs_richness(cls_logits: Tensor) -> Tensor:
    """FRS's feature-richness score of one level: max over all class channels of sigmoid(teacher logit), detached;
    (N, C, H, W) -> (N, 1, H, W)."""
    if cls_logits.dim() != 4:
        raise ValueError(f'frs_richness expects (N, C, H, W) class logits, got {tuple(cls_logits.shape)}')
    return cls_logits.detach().float().sigmoid().amax(dim=1, keepdim=True)


def grid_points(level_sizes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float = 0.0,
                device=None) -> tuple[Tensor, Tensor]:
    """(x, y) prior centres (j + offset) * s, row-major per level, and the stride of each; used when no teacher
    DensePredictions are available (anchor-based mmdet heads use offset 0)."""
    pts, st = [], []
    for (h, w), s in zip(level_sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(int(h), device=device, dtype=torch.float32),
                                torch.arange(int(w), device=device, dtype=torch.float32), indexing='ij')
        pts.append(torch.stack([(xs.reshape(-1) + offset) * s, (ys.reshape(-1) + offset) * s], dim=1))
        st.append(torch.full((int(h) * int(w),), float(s), device=device))
    return torch.cat(pts), torch.cat(st)


def split_levels(x: Tensor, level_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """(N, A, ...) with A = sum H_l W_l -> per level (N, H_l, W_l, ...)."""
    counts = [int(h) * int(w) for h, w in level_sizes]
    if x.shape[1] != sum(counts):
        raise ValueError(f'split_levels: {x.shape[1]} locations for level sizes {list(level_sizes)}')
    return [p.reshape(x.shape[0], int(h), int(w), *x.shape[2:])
            for p, (h, w) in zip(torch.split(x, counts, dim=1), level_sizes)]


def paired_levels(student: Sequence[Tensor], teacher: Sequence[Tensor], owner: str, num_levels: int,
                  same_channels: bool = True) -> list[tuple[Tensor, Tensor]]:
    """Check that student and teacher give ``num_levels`` maps of equal (N, H, W) (and C unless an align layer
    maps the student), and return them as fp32 pairs (every KD loss is computed in fp32)."""
    if len(student) != num_levels or len(teacher) != num_levels:
        raise ValueError(f'{owner}: built for {num_levels} levels, got {len(student)} student and '
                         f'{len(teacher)} teacher maps')
    pairs = []
    for l, (s, t) in enumerate(zip(student, teacher)):
        if s.dim() != 4 or t.dim() != 4:
            raise ValueError(f'{owner}: level {l} maps must be (N, C, H, W), got {tuple(s.shape)} / {tuple(t.shape)}')
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:] or (same_channels and s.shape[1] != t.shape[1]):
            raise ValueError(f'{owner}: level {l} student map {tuple(s.shape)} does not match teacher map '
                             f'{tuple(t.shape)}')
        pairs.append((s.float(), t.float()))
    return pairs
