"""DeFeat: decoupled foreground/background feature imitation (Guo et al., CVPR 2021), see docs/baselines.md.

Neck part: per level, an adapted student map imitates the teacher separately inside and outside the GT mask, each
part normalised by its own (2 * C * mask sum). Head part (optional; the public code has it only for two-stage
detectors): temperature-softmax KL of the class logits on GT-mask and background locations separately.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from .base import BaseKDLoss, KDContext
from .baseline_masks import defeat_gt_masks, paired_levels


def fmod_normal_(weight: Tensor, std: float) -> Tensor:
    """N(0, 1) samples wrapped into (-2, 2) by fmod, times std: the init of DeFeat's and FGFI's adapters."""
    with torch.no_grad():
        return weight.normal_().fmod_(2).mul_(std)


def softmax_kl(student_logits: Tensor, teacher_logits: Tensor, temp: float) -> Tensor:
    """KL(softmax(z_t / T) || softmax(z_s / T)) summed over the last dim: (..., K) -> (...)."""
    t = F.softmax(teacher_logits / temp, dim=-1)
    return (t * (F.log_softmax(teacher_logits / temp, dim=-1) - F.log_softmax(student_logits / temp, dim=-1))).sum(-1)


@MODELS.register_module()
class DeFeatLoss(BaseKDLoss):
    """DeFeat on the FPN outputs.

    Args:
        w_fg, w_bg: neck weights (``hint_neck_w`` / ``hint_neck_back_w``).
        level_assign: 'fpn_rule' (each GT on one level, DeFeat's rule) or 'all' (box mask on every level).
        strides: FPN strides; taken from the teacher's DensePredictions when the context has them.
        head_kd: add the decoupled class-logit KL (weights w_head_fg / w_head_bg, temperature head_temp).
    """

    def __init__(self, in_channels: int = 256, num_levels: int = 5, w_fg: float = 3.0, w_bg: float = 12.0,
                 level_assign: str = 'fpn_rule', canonical_scale: float = 56.0,
                 strides: Sequence[int] = (8, 16, 32, 64, 128), head_kd: bool = False, w_head_fg: float = 2.0,
                 w_head_bg: float = 2.0, head_temp: float = 1.0, adapter_std: float = 1e-4):
        super().__init__()
        if level_assign not in ('fpn_rule', 'all'):
            raise ValueError(f"DeFeatLoss: level_assign must be 'fpn_rule' or 'all', got {level_assign!r}")
        if len(strides) != num_levels:
            raise ValueError(f'DeFeatLoss: {len(strides)} strides for {num_levels} levels')
        self.num_levels = num_levels
        self.w_fg, self.w_bg = float(w_fg), float(w_bg)
        self.level_assign, self.canonical_scale = level_assign, float(canonical_scale)
        self.strides = [int(s) for s in strides]
        self.head_kd = bool(head_kd)
        self.w_head_fg, self.w_head_bg, self.head_temp = float(w_head_fg), float(w_head_bg), float(head_temp)
        self.adapters = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(num_levels))
        for conv in self.adapters:   # bias keeps PyTorch's default init, as in DeFeat
            fmod_normal_(conv.weight, adapter_std)

    def masks(self, ctx: KDContext, level_sizes: list[tuple[int, int]]) -> list[Tensor]:
        strides = list(ctx.teacher_pred.strides) if ctx.teacher_pred is not None else self.strides
        return defeat_gt_masks(ctx.gt_boxes, ctx.gt_valid, level_sizes, strides, self.level_assign,
                               self.canonical_scale)

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        name = type(self).__name__
        pairs = paired_levels(ctx.student.neck, ctx.teacher.neck, name, self.num_levels)
        masks = self.masks(ctx, [tuple(ft.shape[-2:]) for _, ft in pairs])
        loss_fg, loss_bg = 0.0, 0.0
        for level, ((fs, ft), m) in enumerate(zip(pairs, masks)):
            c = ft.shape[1]
            sq = (self.adapters[level](fs) - ft).pow(2).sum(dim=1)                       # (N, H, W)
            loss_fg = loss_fg + (sq * m).sum() / (2 * c * m.sum()).clamp_min(1.0)
            loss_bg = loss_bg + (sq * (1 - m)).sum() / (2 * c * (1 - m).sum()).clamp_min(1.0)
        losses = {'loss_defeat_fg': self.w_fg * loss_fg / self.num_levels,
                  'loss_defeat_bg': self.w_bg * loss_bg / self.num_levels}
        if self.head_kd:
            losses.update(self.head_losses(ctx, masks))
        return self.check_keys(losses, name)

    def head_losses(self, ctx: KDContext, masks: list[Tensor]) -> dict[str, Tensor]:
        """Sum of KL_T over fg (resp. bg) locations of all levels / their count * T^2."""
        s_cls, t_cls = ctx.student.head_outs[0], ctx.teacher.head_outs[0]
        pairs = paired_levels(s_cls, t_cls, type(self).__name__ + ' (class logits)', self.num_levels)
        kl_fg, kl_bg, n_fg, n_bg = 0.0, 0.0, 0.0, 0.0
        for (zs, zt), m in zip(pairs, masks):
            kl = softmax_kl(zs.permute(0, 2, 3, 1), zt.permute(0, 2, 3, 1), self.head_temp)   # (N, H, W)
            kl_fg, kl_bg = kl_fg + (kl * m).sum(), kl_bg + (kl * (1 - m)).sum()
            n_fg, n_bg = n_fg + m.sum(), n_bg + (1 - m).sum()
        t2 = self.head_temp ** 2
        return {'loss_defeat_head_fg': self.w_head_fg * t2 * kl_fg / torch.clamp(torch.as_tensor(n_fg), min=1.0),
                'loss_defeat_head_bg': self.w_head_bg * t2 * kl_bg / torch.clamp(torch.as_tensor(n_bg), min=1.0)}
