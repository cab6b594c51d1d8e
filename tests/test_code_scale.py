"""The paper's equations with weights on the code's scale (pgd.core.code_scale): each term equals the code's.

The factors (alpha, beta x N; gamma / C; delta x C) are exact when every image of the batch has the same masks
(bug B1 then distils each image with exactly N times its own mask) and the same number of non-zero reg weights, and
when the spatial attention term of Eq. 8 is zero (its factor is H W, not C); these inputs are built that way.
"""
from __future__ import annotations

import pytest
import torch

from pgd.core import PGDSettings, pgd_cls_loss, pgd_reg_loss
from pgd.core.code_scale import paper_weights_on_code_scale

N, C, SIZES = 4, 256, [(6, 5), (3, 3)]


def _inputs():
    g = torch.Generator().manual_seed(0)
    feats_t = [torch.rand(N, C, h, w, generator=g) for h, w in SIZES]
    # the student permutes the teacher's channels: the spatial attention (channel mean) is the teacher's, the
    # channel attention is not
    perm = torch.randperm(C, generator=g)
    feats_s = [ft[:, perm] for ft in feats_t]
    imp, bg = [], []
    for h, w in SIZES:
        one = torch.zeros(h, w)
        one[1:3, 1:4] = torch.rand(one[1:3, 1:4].shape, generator=g) + 0.1
        imp.append(one.expand(N, h, w).clone())                      # the same mask in every image
        bg.append((one == 0).float().expand(N, h, w).clone())
    return feats_s, feats_t, imp, bg


def _code():
    return PGDSettings.official_code('atss')


def _paper_on_code_scale():
    paper = _code().replace(mix_masks_across_batch=False, reg_loss_norm='paper', att_loss_norm='paper')
    return paper_weights_on_code_scale(paper, images_per_gpu=N, channels=C)


def test_factors_are_n_and_c():
    cfg, code = _paper_on_code_scale(), _code()
    assert (cfg.alpha, cfg.beta) == pytest.approx((code.alpha * 4, code.beta * 4))
    assert (cfg.gamma, cfg.delta) == pytest.approx((code.gamma / 256, code.delta * 256))
    assert cfg.level_weights == code.level_weights


def test_every_term_matches_the_code():
    fs, ft, imp, bg = _inputs()
    code_cls = pgd_cls_loss(fs, ft, imp, bg, _code())
    code_reg = pgd_reg_loss(fs, ft, imp, _code())
    paper_cls = pgd_cls_loss(fs, ft, imp, bg, _paper_on_code_scale())
    paper_reg = pgd_reg_loss(fs, ft, imp, _paper_on_code_scale())
    for name, a, b in zip(('cls feature', 'cls attention', 'reg feature', 'reg attention'),
                          code_cls + code_reg, paper_cls + paper_reg):
        assert float(a) > 0, name
        assert float(b) == pytest.approx(float(a), rel=1e-5), name
    # and without the rescaling they are far apart (the reason for it)
    plain = _code().replace(mix_masks_across_batch=False, reg_loss_norm='paper', att_loss_norm='paper')
    assert float(pgd_reg_loss(fs, ft, imp, plain)[0]) == pytest.approx(float(code_reg[0]) * C, rel=1e-5)
    assert float(pgd_cls_loss(fs, ft, imp, bg, plain)[0]) == pytest.approx(float(code_cls[0]) / N, rel=1e-5)


def test_rescaling_needs_the_paper_normalisation():
    with pytest.raises(ValueError, match='rescaled for the paper normalisation only'):
        paper_weights_on_code_scale(_code(), images_per_gpu=4)
    with pytest.raises(ValueError, match='images_per_gpu must be a positive int, got 0'):
        paper_weights_on_code_scale(_paper_on_code_scale(), images_per_gpu=0)


def test_paper_profile_switch_gives_the_rescaled_weights():
    from pgd.config import compose_config
    from pgd.losses.pgd_loss import PGDLoss

    cfg = compose_config('atss', 'r50', 'paper', 'student', method='pgd', teacher='t',
                         overrides={'recipe_switches.pgd_loss_norm': 'paper'})
    kd = dict(cfg.model.kd_losses[0])
    kd.pop('type')
    s = PGDLoss(**kd).settings
    assert (s.mix_masks_across_batch, s.reg_loss_norm, s.att_loss_norm) == (False, 'paper', 'paper')
    assert (s.alpha, s.beta, s.gamma, s.delta) == pytest.approx((0.32, 0.16, 0.128 / 256, 8e-4 * 256))
    crowd = compose_config('ddod', 'r50', 'paper', 'student', 'crowdhuman', method='pgd', teacher='t',
                           overrides={'recipe_switches.pgd_loss_norm': 'paper'})
    assert crowd.model.kd_losses[0].code_scale == dict(images_per_gpu=2, channels=256)
