"""FRS: distillation weighted by the teacher's feature richness (Du et al., NeurIPS 2021), see docs/baselines.md.

The richness R = max over class channels of sigmoid(teacher class logit) weights an adapted FPN-feature imitation
and a soft-target BCE on the class logits, both normalised by sum R per level, with a linear warm-up.
Class logits are ``head_outs[0]`` of every supported head: FCOS/ATSS/DDOD class logits (no centerness / IoU branch),
AutoAssign class logits (objectness excluded), and GFL's joint quality-class (QFL) logit.
"""
from __future__ import annotations

import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.logging import MessageHub
from torch import Tensor, nn

from .base import BaseKDLoss, ConfigError, KDContext
from .baseline_masks import frs_richness, paired_levels


#: mmdet's 1x schedule at the batch of 16 that FRS and the FGFI/DeFeat re-implementations were run with
REFERENCE_1X_ITERS = 87960


def scaled_warmup(warmup_iters: int, ref_iters: int | None) -> float:
    """The warm-up length in iterations of this run.

    With ``ref_iters`` set and a run shorter than it (mmengine's RuntimeInfoHook puts ``max_iters`` in the
    MessageHub), the warm-up keeps its fraction of the schedule: warmup_iters * max_iters / ref_iters. With the
    paper's batch 32 and a 1x schedule this is exactly the official number of warm-up *images*; on the mini
    profile's few hundred iterations it keeps the imitation from being off for the whole run.
    """
    if not ref_iters:
        return float(warmup_iters)
    max_iters = MessageHub.get_current_instance().get_info('max_iters')
    if not max_iters or max_iters >= ref_iters:
        return float(warmup_iters)
    return warmup_iters * max_iters / ref_iters


@MODELS.register_module()
class FRSLoss(BaseKDLoss):
    """FRS on the FPN outputs and the class logits.

    Args:
        w_feat, w_cls: weights of the feature and logit terms.
        warmup_iters: the losses are scaled by min(1, iteration / warmup_iters) (0 disables the warm-up).
        warmup_ref_iters: scale warmup_iters to runs shorter than this schedule (:func:`scaled_warmup`).
    """

    def __init__(self, in_channels: int = 256, num_levels: int = 5, w_feat: float = 0.1, w_cls: float = 0.05,
                 warmup_iters: int = 500, warmup_ref_iters: int | None = None):
        super().__init__()
        if warmup_iters < 0:
            raise ValueError(f'FRSLoss: warmup_iters must be >= 0, got {warmup_iters}')
        self.num_levels = num_levels
        self.w_feat, self.w_cls = float(w_feat), float(w_cls)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ref_iters = warmup_ref_iters
        # FRS's ADAP with with_relu=False: a plain 3x3 conv per level, default init
        self.adapters = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(num_levels))

    def warmup_factor(self, iteration: int) -> float:
        length = scaled_warmup(self.warmup_iters, self.warmup_ref_iters)
        return 1.0 if length <= 0 else min(1.0, iteration / length)

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        name = type(self).__name__
        feats = paired_levels(ctx.student.neck, ctx.teacher.neck, name, self.num_levels)
        s_cls, t_cls = ctx.student.head_outs[0], ctx.teacher.head_outs[0]
        if len(s_cls) == self.num_levels and s_cls[0].shape[1] != t_cls[0].shape[1]:
            raise ConfigError(f'{name}: student and teacher class logits have {s_cls[0].shape[1]} and '
                              f'{t_cls[0].shape[1]} channels; FRS needs the same classes and anchors on both')
        logits = paired_levels(s_cls, t_cls, name + ' (class logits)', self.num_levels)
        loss_feat, loss_cls = 0.0, 0.0
        for level, ((fs, ft), (zs, zt)) in enumerate(zip(feats, logits)):
            r = frs_richness(zt)                                                          # (N, 1, H, W)
            norm = r.sum().clamp_min(1e-12)
            loss_feat = loss_feat + (r * (ft - self.adapters[level](fs)).pow(2)).sum() / norm
            # BCE-with-logits against sigmoid targets: the stable form of FRS's BCE(sigmoid(z_s), sigmoid(z_t))
            bce = F.binary_cross_entropy_with_logits(zs, zt.sigmoid(), reduction='none')
            loss_cls = loss_cls + (r * bce).sum() / norm
        k = self.warmup_factor(ctx.iteration)
        return self.check_keys({'loss_frs_feat': k * self.w_feat * loss_feat,
                                'loss_frs_cls': k * self.w_cls * loss_cls}, name)
