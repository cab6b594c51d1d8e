"""PGD losses (paper Sec. 3.3, Eqs. 5, 6, 8, 9, 10) over per-level lists of features and masks.

Inputs per FPN level l: student / teacher features (N, C, H_l, W_l) (the first cls / reg tower conv outputs),
raw foreground importance I (N, H_l, W_l) in [0, 1] (PGW or a Table 5 strategy, not yet normalised) and the
background indicator (N, H_l, W_l). The normalisations are done here because they are among the paper-vs-code
switches of `PGDSettings`. Teacher features are targets: they are detached. Everything is computed in float32.

Batch convention for the paper's per-image equations: the mean over the N images of the batch (the official cls
loss does the same); an image with no non-zero reg weight contributes 0 to the Eq. 9 mean.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .attention import channel_attention, spatial_attention
from .pgw import normalise_by_count
from .settings import PGDSettings


def _check_levels(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor], *masks: Sequence[Tensor]) -> None:
    if len(feats_s) != len(feats_t) or any(len(m) != len(feats_s) for m in masks):
        raise ValueError(f"PGD loss: level counts differ (student {len(feats_s)}, teacher {len(feats_t)}, "
                         f"masks {[len(m) for m in masks]})")
    if not feats_s:
        raise ValueError("PGD loss: no feature levels given")
    for lvl, (fs, ft) in enumerate(zip(feats_s, feats_t)):
        if fs.dim() != 4 or fs.shape != ft.shape:
            raise ValueError(f"PGD loss level {lvl}: student {tuple(fs.shape)} and teacher {tuple(ft.shape)} "
                             f"features must both be (N, C, H, W) of the same shape")
        for m in masks:
            if m[lvl].shape != (fs.shape[0],) + tuple(fs.shape[2:]):
                raise ValueError(f"PGD loss level {lvl}: mask {tuple(m[lvl].shape)} must be (N, H, W) = "
                                 f"{(fs.shape[0],) + tuple(fs.shape[2:])}")


def _mix(mask: Tensor) -> Tensor:
    """Bug B1: each image is distilled with the batch-summed mask."""
    return mask.sum(0, keepdim=True).expand_as(mask)


def pgd_cls_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor], fg_importance: Sequence[Tensor],
                 bg_indicator: Sequence[Tensor], cfg: PGDSettings) -> tuple[Tensor, Tensor]:
    """(L_fea^cls, L_att^cls) summed over levels, each already weighted (alpha, beta, delta, level weights).

    Eq. 5: sum_{c,h,w} (alpha M + beta N) P^T A^T (F^T - F^S)^2 with M = I / #(I != 0) and N = B / sum B per image
    and level; level weight w_l (code) multiplies alpha and beta but not delta.
    Eq. 8 ('paper'): delta (mean_{hw}|P^T - P^S| + mean_{c,h,w}|A^T - A^S|), averaged over images.
    'code': delta (sum_{n,h,w}|P^T - P^S| / N + sum_{n,c,h,w}|A^T - A^S| / (N H W)).
    """
    _check_levels(feats_s, feats_t, fg_importance, bg_indicator)
    fea_total = feats_s[0].new_zeros((), dtype=torch.float32)
    att_total = fea_total.clone()
    for lvl, (fs, ft, imp, bg) in enumerate(zip(feats_s, feats_t, fg_importance, bg_indicator)):
        fs, ft = fs.float(), ft.detach().float()
        n, c, h, w = fs.shape
        m_fg = normalise_by_count(imp.detach().float())
        m_bg = normalise_by_count(bg.detach().float())
        if cfg.mix_masks_across_batch:
            m_fg, m_bg = _mix(m_fg), _mix(m_bg)
        p_t = spatial_attention(ft, cfg.tau, cfg.spatial_reduce)
        a_t = channel_attention(ft, cfg.tau)
        weighted_sq = (p_t[:, None] * a_t * (fs - ft) ** 2).sum(1)                # (N, H, W), channel sum
        fg = (m_fg * weighted_sq).sum() / n
        bg_loss = (m_bg * weighted_sq).sum() / n
        fea_total = fea_total + cfg.level_weight(lvl) * (cfg.alpha * fg + cfg.beta * bg_loss)

        p_s = spatial_attention(fs, cfg.tau, cfg.spatial_reduce)
        a_s = channel_attention(fs, cfg.tau)
        dp, da = (p_t - p_s).abs(), (a_t - a_s).abs()
        if cfg.att_loss_norm == "paper":
            att = dp.mean() + da.mean()
        else:
            att = dp.sum() / n + da.sum() / (n * h * w)
        att_total = att_total + cfg.delta * att
    return fea_total, att_total


def pgd_reg_loss(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor], reg_importance: Sequence[Tensor],
                 cfg: PGDSettings) -> tuple[Tensor, Tensor]:
    """(L_fea^reg, L_att^reg) summed over levels, weighted by gamma and delta; no spatial attention, no background.

    'paper' (Eqs. 6, 9, per image then mean over images): gamma sum_{c,h,w} M A^T (F^T - F^S)^2 with
    M = I / #(I != 0); delta / (C #(I != 0)) sum_{I != 0} sum_c |A^T - A^S|.
    'code' (docs/methods.md §1.6): over the batch set P = {(n, h, w): I != 0}, gamma mean_P I mean_c A^T (F^T - F^S)^2
    and delta mean_P sum_c |A^S - A^T|; 0 when P is empty.
    """
    _check_levels(feats_s, feats_t, reg_importance)
    fea_total = feats_s[0].new_zeros((), dtype=torch.float32)
    att_total = fea_total.clone()
    for fs, ft, imp in zip(feats_s, feats_t, reg_importance):
        fs, ft, imp = fs.float(), ft.detach().float(), imp.detach().float()
        n, c = fs.shape[:2]
        a_t = channel_attention(ft, cfg.tau)
        a_s = channel_attention(fs, cfg.tau)
        weighted_sq = (a_t * (fs - ft) ** 2).sum(1)                                # (N, H, W), channel sum
        att_map = (a_t - a_s).abs().sum(1)                                         # (N, H, W)
        on = (imp != 0).float()
        if cfg.reg_loss_norm == "paper":
            fea = (normalise_by_count(imp) * weighted_sq).sum() / n
        else:
            fea = (imp * weighted_sq).sum() / c / on.sum().clamp(min=1)
        if cfg.att_loss_norm == "paper":
            per_image = (on * att_map).sum(dim=(1, 2)) / (c * on.sum(dim=(1, 2))).clamp(min=1)
            att = per_image.sum() / n
        else:
            att = (on * att_map).sum() / on.sum().clamp(min=1)
        fea_total = fea_total + cfg.gamma * fea
        att_total = att_total + cfg.delta * att
    return fea_total, att_total


def pgd_distill_loss(cls_s: Sequence[Tensor], cls_t: Sequence[Tensor], reg_s: Sequence[Tensor],
                     reg_t: Sequence[Tensor], cls_importance: Sequence[Tensor], reg_importance: Sequence[Tensor],
                     bg_indicator: Sequence[Tensor], cfg: PGDSettings) -> dict[str, Tensor]:
    """Eq. 10: the four weighted terms and their sum under 'total'."""
    cls_fea, cls_att = pgd_cls_loss(cls_s, cls_t, cls_importance, bg_indicator, cfg)
    reg_fea, reg_att = pgd_reg_loss(reg_s, reg_t, reg_importance, cfg)
    return {"cls_fea": cls_fea, "cls_att": cls_att, "reg_fea": reg_fea, "reg_att": reg_att,
            "total": cls_fea + cls_att + reg_fea + reg_att}
