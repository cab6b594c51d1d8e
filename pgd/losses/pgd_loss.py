"""``PGDLoss``: Prediction-Guided Distillation (paper Sec. 3, Eqs. 1-10) as a registered KD loss.

The maths lives in the pure-torch :mod:`pgd.core`; this module turns a :class:`KDContext` into its inputs:
teacher DensePredictions -> Eq. 1 quality (xi_cls and xi_reg) -> foreground importance (PGW or a Table 5
strategy) and the background indicator over all levels -> split per level -> Eqs. 5/8 on the cls features and
Eqs. 6/9 on the reg features (Table 7 ``branches``; 'neck' applies the cls-branch loss to the FPN outputs).
Every hyper-parameter and paper-vs-code switch is a :class:`pgd.core.PGDSettings` field, given as a keyword here.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from mmdet.registry import MODELS

from pgd.core import (PGDSettings, background_mask, foreground_importance, pgd_cls_loss, pgd_reg_loss,
                      prediction_candidates, quality_score, split_levels)
from pgd.core.code_scale import paper_weights_on_code_scale
from pgd.core.regions import CANDIDATE_STRATEGIES, NEEDS_QUALITY
from pgd.core.settings import BRANCHES, DETECTORS

from .base import BaseKDLoss, ConfigError, KDContext


@MODELS.register_module()
class PGDLoss(BaseKDLoss):
    """PGD feature + attention distillation.

    Args:
        preset: 'paper' (the equations; default) or 'code' (the official implementation, bugs included).
        detector: detector family; filled in by the distiller when None (it sets the paper's alpha rule).
        branches: subset of {'neck', 'cls', 'reg'} (Table 7).
        seed: seeds the PGW position noise of the 'noise' regulariser (with the iteration), for reproducibility.
        code_scale: dict(images_per_gpu=N, channels=C) - alpha / beta / gamma / delta are given on the official
            code's scale and are rescaled for the paper's normalisation (pgd.core.code_scale); None: as given.
        **settings: any :class:`PGDSettings` field (fg_strategy, k, alpha, beta, gamma, delta, tau, xi_cls, xi_reg,
            spatial_reduce, topk_inside_box, mix_masks_across_batch, gfl_decode_stride_bug, ...). beta and gamma
            follow alpha (alpha/2, 1.6 alpha) unless given.
    """

    supported_detectors = DETECTORS

    def __init__(self, preset: str = 'paper', detector: str | None = None,
                 branches: Iterable[str] = ('cls', 'reg'), seed: int = 0, code_scale: dict | None = None,
                 **settings: Any) -> None:
        super().__init__()
        branches = tuple(branches)
        unknown = set(branches) - set(BRANCHES)
        if unknown or not branches or len(set(branches)) != len(branches):
            raise ConfigError(f'PGDLoss.branches must be a non-empty subset of {BRANCHES} without repeats, '
                              f'got {branches}')
        self.branches = branches
        self.seed = int(seed)
        self._preset = preset
        self._settings = dict(settings)
        self._code_scale = dict(code_scale) if code_scale else None
        self.settings = self._make_settings(detector)

    def _make_settings(self, detector: str | None) -> PGDSettings:
        if self._preset in ('code', 'official_code') and detector is None:
            # the code preset is per detector: a placeholder until bind_detector completes it
            return PGDSettings.paper(None, **{k: v for k, v in self._settings.items()
                                              if k not in ('backbone', 'dataset')})
        try:
            settings = PGDSettings.from_dict(dict(preset=self._preset, detector=detector, **self._settings))
            if self._code_scale:
                settings = paper_weights_on_code_scale(settings, **self._code_scale)
            return settings
        except (TypeError, ValueError) as err:
            raise ConfigError(f'PGDLoss: {err}') from err

    def bind_detector(self, detector: str) -> None:
        if self.settings.detector is not None and self.settings.detector != detector:
            raise ConfigError(f'PGDLoss configured for {self.settings.detector!r} but distils a {detector!r}')
        self.settings = self._make_settings(detector)

    # the cls / reg branches distil the output of each head tower's first conv, per FPN level (paper Sec. 3.3)
    taps = dict(cls_feat='bbox_head.cls_convs.0', reg_feat='bbox_head.reg_convs.0')

    def required_taps(self) -> dict:
        wanted = {'cls': 'cls_feat', 'reg': 'reg_feat'}
        return {wanted[b]: self.taps[wanted[b]] for b in self.branches if b in wanted}

    def adapter_options(self) -> dict:
        # the official code decodes GFL boxes with a per-image stride (bug B2, docs/methods.md §1.9): the teacher's
        # adapter reproduces it where the settings ask for it
        return {'gfl_decode_stride_bug': True} if self.settings.gfl_decode_stride_bug else {}

    # ------------------------------------------------------------------ masks
    def importance(self, ctx: KDContext) -> tuple[list[Tensor] | None, list[Tensor] | None, list[Tensor]]:
        """Per-level raw (cls importance, reg importance, background indicator), each (N, H_l, W_l)."""
        cfg = self.settings
        pred = ctx.teacher_pred
        if pred is None:
            raise ValueError('PGDLoss needs KDContext.teacher_pred (the teacher DensePredictions)')
        if pred.boxes.shape[0] != ctx.num_images:
            raise ValueError(f'PGDLoss: teacher predictions for {pred.boxes.shape[0]} images, GT for '
                             f'{ctx.num_images}')
        swap = cfg.swap_xy_anchor_free
        pgw_cfg = cfg.pgw_config()
        generator = None
        if cfg.pgw_regulariser == 'noise':
            generator = torch.Generator(device=pred.points.device)
            generator.manual_seed(self.seed * 1_000_003 + int(ctx.iteration))
        gt_boxes = ctx.gt_boxes.to(pred.boxes.dtype)

        def fg(xi: float) -> Tensor:
            quality = candidates = None
            if cfg.fg_strategy in CANDIDATE_STRATEGIES:
                # the top-K candidates straight from the predictions: no (N, M, A) quality map
                candidates = prediction_candidates(pred.cls_prob, pred.boxes, pred.points, gt_boxes, ctx.gt_labels,
                                                   ctx.gt_valid, xi, cfg.k, pgw_cfg, pred.valid, pred.level_sizes)
            elif cfg.fg_strategy in NEEDS_QUALITY:
                quality = quality_score(pred.cls_prob, pred.boxes, pred.points, gt_boxes, ctx.gt_labels,
                                        ctx.gt_valid, xi, inside_indicator=cfg.topk_inside_box, swap_xy=swap)
            return foreground_importance(cfg.fg_strategy, pred.points, gt_boxes, ctx.gt_valid, quality=quality,
                                         k=cfg.k, cfg=pgw_cfg, valid=pred.valid, generator=generator,
                                         candidates=candidates)

        need_cls = 'cls' in self.branches or 'neck' in self.branches
        cls_imp = split_levels(fg(cfg.xi_cls), pred.level_sizes) if need_cls else None
        reg_imp = split_levels(fg(cfg.xi_reg), pred.level_sizes) if 'reg' in self.branches else None
        bg = background_mask(pred.points, gt_boxes, ctx.gt_valid, swap_xy=swap, valid=pred.valid)
        return cls_imp, reg_imp, split_levels(bg, pred.level_sizes)

    # ------------------------------------------------------------------ loss
    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        cls_imp, reg_imp, bg = self.importance(ctx)
        losses: dict[str, Tensor] = {}
        if 'neck' in self.branches:
            fea, att = pgd_cls_loss(ctx.student.neck, ctx.teacher.neck, cls_imp, bg, self.settings)
            losses.update(loss_pgd_neck_fea=fea, loss_pgd_neck_att=att)
        if 'cls' in self.branches:
            fea, att = pgd_cls_loss(ctx.student.cls_feat, ctx.teacher.cls_feat, cls_imp, bg, self.settings)
            losses.update(loss_pgd_cls_fea=fea, loss_pgd_cls_att=att)
        if 'reg' in self.branches:
            fea, att = pgd_reg_loss(ctx.student.reg_feat, ctx.teacher.reg_feat, reg_imp, self.settings)
            losses.update(loss_pgd_reg_fea=fea, loss_pgd_reg_att=att)
        return losses

    def extra_repr(self) -> str:
        s = self.settings
        return (f'detector={s.detector}, branches={self.branches}, fg={s.fg_strategy}, k={s.k}, alpha={s.alpha}, '
                f'beta={s.beta}, gamma={s.gamma}, delta={s.delta}, tau={s.tau}, xi=({s.xi_cls}, {s.xi_reg})')
