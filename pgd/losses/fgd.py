"""FGD: Focal and Global Distillation (Yang et al., CVPR 2022), on the FPN outputs (docs/baselines.md).

Per level: focal masks from the GT boxes, the teacher's spatial/channel attention weighting the feature imitation,
an attention-imitation term, and a global term that compares GcBlock outputs of student and teacher (both blocks
trained).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from .base import BaseKDLoss, KDContext
from .baseline_masks import fgd_focal_masks, paired_levels


def fgd_spatial_attention(feat: Tensor, temp: float) -> Tensor:
    """S(F) = H W softmax_hw(mean_c |F| / T): (N, C, H, W) -> (N, H, W)."""
    n, _, h, w = feat.shape
    logits = feat.abs().mean(dim=1).reshape(n, -1) / temp
    return (h * w * F.softmax(logits, dim=1)).reshape(n, h, w)


def fgd_channel_attention(feat: Tensor, temp: float) -> Tensor:
    """C(F) = C softmax_c(mean_hw |F| / T), pooled over space: (N, C, H, W) -> (N, C)."""
    c = feat.shape[1]
    return c * F.softmax(feat.abs().mean(dim=(2, 3)) / temp, dim=1)


class GcBlock(nn.Module):
    """FGD's global-context block: G(F) = F + Conv(ReLU(LN(Conv(sum_hw softmax(conv_mask(F)) F))))."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        mid = max(1, int(channels * ratio))
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, mid, kernel_size=1),
            nn.LayerNorm([mid, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, kernel_size=1))
        # FGD's init: Kaiming fan-in on the context mask; the last conv at zero so G starts as the identity.
        nn.init.kaiming_normal_(self.conv_mask.weight, mode='fan_in', nonlinearity='relu')
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        weights = F.softmax(self.conv_mask(x).reshape(n, 1, h * w), dim=2)           # (N, 1, HW)
        context = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))         # (N, C, 1)
        return x + self.channel_add(context.reshape(n, c, 1, 1))


@MODELS.register_module()
class FGDLoss(BaseKDLoss):
    """FGD on ``num_levels`` FPN maps.

    Args:
        in_channels: teacher FPN channels.
        student_channels: student FPN channels; a 1x1 align conv is added only when they differ.
        temp: attention temperature T.
        alpha_fg, beta_bg, gamma_att, lambda_glob: weights of the four terms.
        box_scale: 'batch_input_shape' maps boxes with x * W / batch_w (correct on padded batches);
            'img_shape' reproduces the official scaling by each image's unpadded shape.
    """

    def __init__(self, in_channels: int = 256, student_channels: int | None = None, num_levels: int = 5,
                 temp: float = 0.5, alpha_fg: float = 1e-3, beta_bg: float = 5e-4, gamma_att: float = 5e-4,
                 lambda_glob: float = 5e-6, box_scale: str = 'batch_input_shape'):
        super().__init__()
        if box_scale not in ('batch_input_shape', 'img_shape'):
            raise ValueError(f"FGDLoss: box_scale must be 'batch_input_shape' or 'img_shape', got {box_scale!r}")
        if temp <= 0:
            raise ValueError(f'FGDLoss: temp must be > 0, got {temp}')
        student_channels = in_channels if student_channels is None else student_channels
        self.num_levels = num_levels
        self.temp = float(temp)
        self.alpha_fg, self.beta_bg = float(alpha_fg), float(beta_bg)
        self.gamma_att, self.lambda_glob = float(gamma_att), float(lambda_glob)
        self.box_scale = box_scale
        self.align = (nn.ModuleList(nn.Conv2d(student_channels, in_channels, 1) for _ in range(num_levels))
                      if student_channels != in_channels else None)
        self.gc_student = nn.ModuleList(GcBlock(in_channels) for _ in range(num_levels))
        self.gc_teacher = nn.ModuleList(GcBlock(in_channels) for _ in range(num_levels))

    def level_terms(self, level: int, fs: Tensor, ft: Tensor, fg: Tensor, bg: Tensor) -> dict[str, Tensor]:
        """Unweighted per-level terms (fg, bg, att, glob), each divided by the batch size N."""
        n = fs.shape[0]
        if self.align is not None:
            fs = self.align[level](fs)
        s_t, c_t = fgd_spatial_attention(ft, self.temp), fgd_channel_attention(ft, self.temp)
        s_s, c_s = fgd_spatial_attention(fs, self.temp), fgd_channel_attention(fs, self.temp)
        sq = (fs - ft).pow(2) * s_t[:, None] * c_t[:, :, None, None]
        return dict(
            fg=(sq * fg[:, None]).sum() / n,
            bg=(sq * bg[:, None]).sum() / n,
            att=((c_s - c_t).abs().sum() + (s_s - s_t).abs().sum()) / n,
            glob=(self.gc_student[level](fs) - self.gc_teacher[level](ft)).pow(2).sum() / n)

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        pairs = paired_levels(ctx.student.neck, ctx.teacher.neck, type(self).__name__, self.num_levels,
                              same_channels=self.align is None)
        n = ctx.num_images
        scale_shapes = ([tuple(ctx.batch_input_shape)] * n if self.box_scale == 'batch_input_shape'
                        else [tuple(s) for s in ctx.img_shapes])
        total = dict(fg=0.0, bg=0.0, att=0.0, glob=0.0)
        for level, (fs, ft) in enumerate(pairs):
            fg, bg = fgd_focal_masks(ctx.gt_boxes, ctx.gt_valid, ft.shape[-2:], scale_shapes)
            for k, v in self.level_terms(level, fs, ft, fg, bg).items():
                total[k] = total[k] + v
        return self.check_keys({
            'loss_fgd_fg': self.alpha_fg * total['fg'],
            'loss_fgd_bg': self.beta_bg * total['bg'],
            'loss_fgd_att': self.gamma_att * total['att'],
            'loss_fgd_glob': self.lambda_glob * total['glob'],
        }, type(self).__name__)
