"""FKD (a.k.a. FBKD): attention-guided and non-local distillation (Zhang & Ma, ICLR 2021), see docs/baselines.md.

Per FPN level: an attention-masked feature imitation (adapter 1x1), channel and spatial pooled-feature imitation
(Linear / 3x3 adapters), and a relation term between a student and a teacher non-local block (both trained).
All four are L2 *norms* over the whole batch tensor, as in the source code.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import NonLocal2d
from mmdet.registry import MODELS
from torch import Tensor, nn

from .base import BaseKDLoss, KDContext
from .baseline_masks import paired_levels
from .fgd import fgd_channel_attention, fgd_spatial_attention

#: per-level (channel reduction, max-pool size) of the NL blocks for P3..P7: C' = 64, 64, 128, 128, 128 at C = 256
DEFAULT_NL_CFG = ((4, 8), (4, 4), (2, 2), (2, 2), (2, 2))

#: variant (a) (MMRazor / supplement copy a) and (b) (copy b: T = 0.1, channel mask used, weights x6)
VARIANTS = {
    'a': dict(temp=0.5, w_am=7e-5, w_c=4e-3, w_s=4e-3, w_nl=7e-5, use_channel_mask=False),
    'b': dict(temp=0.1, w_am=6 * 7e-5, w_c=6 * 4e-3, w_s=6 * 4e-3, w_nl=6 * 7e-5, use_channel_mask=True),
}


class ClampedMaxPool2d(nn.Module):
    """k x k max-pool whose kernel shrinks to the map on maps smaller than k (P6/P7 of tiny inputs)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = int(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        k = (min(self.kernel_size, x.shape[-2]), min(self.kernel_size, x.shape[-1]))
        return F.max_pool2d(x, kernel_size=k, stride=k)


def nonlocal_block(channels: int, reduction: int, pool: int) -> NonLocal2d:
    """mmcv's dot-product NonLocal2d (C' = C / reduction, f = theta^T phi / #keys, z = x + BN(W f g), BN
    zero-initialised so z = x at the start) with phi and g followed by a pool x pool max-pool."""
    if reduction < 1 or channels % reduction:
        raise ValueError(f'FKD: NL reduction {reduction} must divide the {channels} channels')
    block = NonLocal2d(channels, reduction=reduction, mode='dot_product',
                       norm_cfg=dict(type='BN'), zeros_init=True)
    if pool > 1:
        block.g = nn.Sequential(block.g, ClampedMaxPool2d(pool))
        block.phi = nn.Sequential(block.phi, ClampedMaxPool2d(pool))
    return block


def fkd_spatial_mask(feat: Tensor, temp: float) -> Tensor:
    """HW softmax_hw(mean_c |F| / T) (FGD's spatial attention): (N, C, H, W) -> (N, 1, H, W)."""
    return fgd_spatial_attention(feat, temp)[:, None]


def fkd_channel_mask(feat: Tensor, temp: float) -> Tensor:
    """C softmax_c(mean_hw |F| / T) (FGD's channel attention): (N, C, H, W) -> (N, C, 1, 1)."""
    return fgd_channel_attention(feat, temp)[..., None, None]


class FKDLevel(nn.Module):
    """The trainable parts of one level: adapters and the two NL blocks."""

    def __init__(self, channels: int, reduction: int, pool: int):
        super().__init__()
        self.feat_adapter = nn.Conv2d(channels, channels, 1)
        self.channel_adapter = nn.Linear(channels, channels)
        self.spatial_adapter = nn.Conv2d(1, 1, 3, padding=1)
        self.nl_student = nonlocal_block(channels, reduction, pool)
        self.nl_teacher = nonlocal_block(channels, reduction, pool)
        self.nl_adapter = nn.Conv2d(channels, channels, 1)


@MODELS.register_module()
class FKDLoss(BaseKDLoss):
    """FKD on the FPN outputs.

    Args:
        variant: 'a' (default: T 0.5, channel mask computed but unused) or 'b' (T 0.1, channel mask in the
            feature term, weights x6); any of temp / w_am / w_c / w_s / w_nl / use_channel_mask given explicitly
            overrides the variant's value.
        nl_cfg: per-level (channel reduction, pool size) of the NL blocks.
    """

    def __init__(self, in_channels: int = 256, num_levels: int = 5, variant: str = 'a',
                 nl_cfg: Sequence[Sequence[int]] = DEFAULT_NL_CFG, temp: float | None = None,
                 w_am: float | None = None, w_c: float | None = None, w_s: float | None = None,
                 w_nl: float | None = None, use_channel_mask: bool | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f'FKDLoss: variant must be one of {sorted(VARIANTS)}, got {variant!r}')
        if len(nl_cfg) != num_levels:
            raise ValueError(f'FKDLoss: nl_cfg has {len(nl_cfg)} entries for {num_levels} levels')
        given = dict(temp=temp, w_am=w_am, w_c=w_c, w_s=w_s, w_nl=w_nl, use_channel_mask=use_channel_mask)
        cfg = {k: (v if given[k] is None else given[k]) for k, v in VARIANTS[variant].items()}
        if cfg['temp'] <= 0:
            raise ValueError(f"FKDLoss: temp must be > 0, got {cfg['temp']}")
        self.variant, self.num_levels = variant, num_levels
        self.temp = float(cfg['temp'])
        self.w_am, self.w_c, self.w_s, self.w_nl = (float(cfg[k]) for k in ('w_am', 'w_c', 'w_s', 'w_nl'))
        self.use_channel_mask = bool(cfg['use_channel_mask'])
        self.levels = nn.ModuleList(FKDLevel(in_channels, int(r), int(p)) for r, p in nl_cfg)

    def level_terms(self, level: int, fs: Tensor, ft: Tensor) -> dict[str, Tensor]:
        """Unweighted per-level norms (am, c, s, nl)."""
        mod = self.levels[level]
        n, c = fs.shape[:2]
        with torch.no_grad():
            mask = 0.5 * (fkd_spatial_mask(ft, self.temp) + fkd_spatial_mask(fs, self.temp))
            if self.use_channel_mask:
                mask = mask * 0.5 * (fkd_channel_mask(ft, self.temp) + fkd_channel_mask(fs, self.temp))
        am = torch.linalg.vector_norm(mask.sqrt() * (ft - mod.feat_adapter(fs)))
        ch = torch.linalg.vector_norm(ft.mean(dim=(2, 3)) - mod.channel_adapter(fs.mean(dim=(2, 3))))
        sp = torch.linalg.vector_norm(ft.mean(dim=1, keepdim=True) - mod.spatial_adapter(fs.mean(dim=1, keepdim=True)))
        nl = torch.linalg.vector_norm(mod.nl_teacher(ft) - mod.nl_adapter(mod.nl_student(fs)))
        return dict(am=am, c=ch, s=sp, nl=nl)

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        name = type(self).__name__
        pairs = paired_levels(ctx.student.neck, ctx.teacher.neck, name, self.num_levels)
        total = dict(am=0.0, c=0.0, s=0.0, nl=0.0)
        for level, (fs, ft) in enumerate(pairs):
            for k, v in self.level_terms(level, fs, ft).items():
                total[k] = total[k] + v
        return self.check_keys({'loss_fkd_am': self.w_am * total['am'],
                                'loss_fkd_channel': self.w_c * total['c'],
                                'loss_fkd_spatial': self.w_s * total['s'],
                                'loss_fkd_nl': self.w_nl * total['nl']}, name)
