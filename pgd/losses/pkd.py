"""PKD: feature distillation via the Pearson correlation coefficient (Cao et al., NeurIPS 2022), detector-agnostic.

Each FPN level's features, student and teacher, are standardised per channel - zero mean and unit standard
deviation over the batch and all locations - and the student imitates the teacher's standardised map by MSE:

    L = loss_weight * sum_l  1 / (2 N C H W) * || s(F_S^l) - s(F_T^l) ||^2,   s(F)_c = (F_c - mu_c) / (sigma_c + eps)

Standardising removes the magnitude and offset differences between teacher and student features (and between
FPN levels), so only how the features vary - their correlation - is imitated: for one channel of M values,
||s(x) - s(y)||^2 / 2M = (M - 1) / M * (1 - r(x, y)) with r Pearson's coefficient (sigma: the sample standard
deviation; eps = 1e-6 aside). The paper's detector setting: loss weight 10 on RetinaNet's FPN, no feature adapter
(channels match). Spatial sizes always match here (teacher and student see the same batch through the same FPN
strides).
"""
from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor

from .base import BaseKDLoss, KDContext
from .baseline_masks import paired_levels


def standardise(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, C, H, W) -> each channel at zero mean and unit (sample) std over N, H, W."""
    flat = feat.transpose(0, 1).reshape(feat.shape[1], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True)
    return ((flat - mean) / (std + eps)).reshape(feat.shape[1], feat.shape[0], *feat.shape[2:]).transpose(0, 1)


@MODELS.register_module()
class PKDLoss(BaseKDLoss):
    """PKD on ``num_levels`` FPN maps.

    Args:
        loss_weight: the weight of the summed per-level losses.
        num_levels: the FPN levels of the neck (all distilled).
        eps: added to the standard deviation.
    """

    def __init__(self, loss_weight: float = 10.0, num_levels: int = 5, eps: float = 1e-6) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.num_levels = int(num_levels)
        self.eps = float(eps)

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        pairs = paired_levels(ctx.student.neck, ctx.teacher.neck, type(self).__name__, self.num_levels)
        loss = sum(0.5 * (standardise(s, self.eps) - standardise(t.detach(), self.eps)).pow(2).mean()
                   for s, t in pairs)
        return {'loss_pkd': self.loss_weight * loss}
