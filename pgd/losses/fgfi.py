"""FGFI: fine-grained feature imitation near objects (Wang et al., CVPR 2019), see docs/baselines.md.

Imitation mask: locations with an anchor whose IoU with a GT exceeds psi times that GT's best anchor IoU (union
over GTs). ATSS, GFL and DDOD use their own single anchor per location (side 8 s centred on the prior); anchor-free
FCOS and AutoAssign get *virtual* square anchors of the same size on their points, used only to build the mask.
On FPN every level is imitated; the sum of squared errors over all levels is divided by 2 x the number of masked
locations of all levels (locations, not x C).
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from .base import BaseKDLoss, KDContext
from .baseline_masks import (fgfi_imitation_mask, fpn_level_of_boxes, grid_points, paired_levels, split_levels,
                             square_anchors)
from .defeat import fmod_normal_
from .frs import scaled_warmup


def prior_layout(ctx: KDContext, level_sizes: list[tuple[int, int]], strides: Sequence[int]
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Prior centres (A, 2), their strides (A,) and levels (A,), from the teacher's DensePredictions when present
    (the detector's own prior convention), else a grid with offset 0 (mmdet's anchor-based convention)."""
    tp = ctx.teacher_pred
    if tp is not None:
        if [tuple(s) for s in tp.level_sizes] != [tuple(s) for s in level_sizes]:
            raise ValueError(f'teacher DensePredictions level sizes {tp.level_sizes} do not match the FPN maps '
                             f'{level_sizes}')
        st = torch.as_tensor(tp.strides, dtype=torch.float32, device=tp.points.device)[tp.level]
        return tp.points.float(), st, tp.level
    pts, st = grid_points(level_sizes, strides, 0.0, device=ctx.gt_boxes.device)
    lvl = torch.cat([torch.full((h * w,), i, dtype=torch.long, device=pts.device)
                     for i, (h, w) in enumerate(level_sizes)])
    return pts, st, lvl


@MODELS.register_module()
class FGFILoss(BaseKDLoss):
    """FGFI on the FPN outputs.

    Args:
        loss_weight: lambda.
        psi: the IoU-ratio threshold.
        anchor_base_scale, anchor_scales, anchor_ratios: the (virtual) anchors per location: side
            base * stride * scale, every scale x ratio (default: ATSS's single 8 s square).
        level_assign: 'all' (M_o = max over the anchors of all levels; default) or 'fpn_rule' (each GT only uses
            the anchors of its DeFeat level, as DeFeat's FPN re-implementation).
        warmup_iters: imitation is off while iteration < warmup_iters (FGFI: 400).
        warmup_ref_iters: scale warmup_iters to runs shorter than this schedule (:func:`pgd.losses.frs.scaled_warmup`).
        adapter_relu: the VGG version's ReLU after the adapter (off for FPN maps, which can be negative).
    """

    def __init__(self, in_channels: int = 256, num_levels: int = 5, loss_weight: float = 0.01, psi: float = 0.5,
                 anchor_base_scale: float = 8.0, anchor_scales: Sequence[float] = (1.0,),
                 anchor_ratios: Sequence[float] = (1.0,), level_assign: str = 'all', warmup_iters: int = 400,
                 warmup_ref_iters: int | None = None,
                 strides: Sequence[int] = (8, 16, 32, 64, 128), adapter_relu: bool = False,
                 adapter_std: float = 1e-4):
        super().__init__()
        if level_assign not in ('all', 'fpn_rule'):
            raise ValueError(f"FGFILoss: level_assign must be 'all' or 'fpn_rule', got {level_assign!r}")
        if not 0.0 <= psi <= 1.0:
            raise ValueError(f'FGFILoss: psi must lie in [0, 1], got {psi}')
        if warmup_iters < 0:
            raise ValueError(f'FGFILoss: warmup_iters must be >= 0, got {warmup_iters}')
        if len(strides) != num_levels:
            raise ValueError(f'FGFILoss: {len(strides)} strides for {num_levels} levels')
        self.num_levels = num_levels
        self.loss_weight, self.psi = float(loss_weight), float(psi)
        self.anchor_base_scale = float(anchor_base_scale)
        self.anchor_scales, self.anchor_ratios = tuple(anchor_scales), tuple(anchor_ratios)
        self.level_assign, self.warmup_iters = level_assign, int(warmup_iters)
        self.warmup_ref_iters = warmup_ref_iters
        self.strides = [int(s) for s in strides]
        layers = []
        for _ in range(num_levels):
            conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
            fmod_normal_(conv.weight, adapter_std)     # FGFI's truncated normal (std 1e-4), zero bias
            nn.init.zeros_(conv.bias)
            layers.append(nn.Sequential(conv, nn.ReLU()) if adapter_relu else conv)
        self.adapters = nn.ModuleList(layers)

    def masks(self, ctx: KDContext, level_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Per level (N, H_l, W_l) {0, 1} imitation masks."""
        pts, st, lvl = prior_layout(ctx, level_sizes, self.strides)
        anchors = square_anchors(pts, st, self.anchor_base_scale, self.anchor_scales, self.anchor_ratios)
        kw = {}
        if self.level_assign == 'fpn_rule':
            kw = dict(anchor_level=lvl, gt_level=fpn_level_of_boxes(ctx.gt_boxes, len(level_sizes)))
        mask = fgfi_imitation_mask(anchors, ctx.gt_boxes, ctx.gt_valid, self.psi, **kw)
        return split_levels(mask, level_sizes)

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        name = type(self).__name__
        pairs = paired_levels(ctx.student.neck, ctx.teacher.neck, name, self.num_levels)
        if ctx.iteration < scaled_warmup(self.warmup_iters, self.warmup_ref_iters):
            # keep the graph (and DDP's used-parameter set) identical; the value is exactly zero
            zero = sum((self.adapters[l](fs).sum() * 0.0 for l, (fs, _) in enumerate(pairs)),
                       pairs[0][0].new_zeros(()))
            return {'loss_fgfi': zero}
        masks = self.masks(ctx, [tuple(ft.shape[-2:]) for _, ft in pairs])
        sq_sum, count = 0.0, 0.0
        for level, ((fs, ft), m) in enumerate(zip(pairs, masks)):
            sq_sum = sq_sum + ((self.adapters[level](fs) - ft).pow(2) * m[:, None]).sum()
            count = count + m.sum()
        loss = self.loss_weight * sq_sum / (2 * torch.as_tensor(count)).clamp_min(1.0)
        return self.check_keys({'loss_fgfi': loss}, name)
