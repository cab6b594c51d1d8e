"""PGDLoss on hand-built KDContexts: values from the paper's Eqs. 1-10 computed by hand / by an independent loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmdet.registry import MODELS

import pgd.losses  # noqa: F401  (registers PGDLoss)
from pgd.core.settings import NOISE_VARIANCE
from pgd.losses.base import ConfigError, DensePredictions, FeatureSet, KDContext, pad_gt
from pgd.losses.pgd_loss import PGDLoss

torch.set_num_threads(1)


def grid_points(h, w, stride, offset=0.0):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing='ij')
    return torch.stack([xs.flatten() * stride + offset, ys.flatten() * stride + offset], 1)


def make_ctx(s_cls, t_cls, s_reg, t_reg, level_sizes, strides, cls_prob, boxes, gt_boxes, gt_labels,
             s_neck=None, t_neck=None):
    points = torch.cat([grid_points(h, w, s) for (h, w), s in zip(level_sizes, strides)])
    level = torch.cat([torch.full((h * w,), i) for i, (h, w) in enumerate(level_sizes)])
    n = cls_prob.shape[0]
    pred = DensePredictions(points=points, level=level, level_sizes=list(level_sizes), strides=list(strides),
                            boxes=boxes, cls_prob=cls_prob, valid=torch.ones(n, points.shape[0], dtype=torch.bool))
    gb, gl, gv = pad_gt(gt_boxes, gt_labels)
    s_neck = s_cls if s_neck is None else s_neck
    t_neck = t_cls if t_neck is None else t_neck
    return KDContext(student=FeatureSet(neck=s_neck, cls_feat=s_cls, reg_feat=s_reg, head_outs=()),
                     teacher=FeatureSet(neck=t_neck, cls_feat=t_cls, reg_feat=t_reg, head_outs=()),
                     teacher_pred=pred, gt_boxes=gb, gt_labels=gl, gt_valid=gv, batch_input_shape=(16, 16),
                     img_shapes=[(16, 16)] * n, iteration=0)


def one_object_case(t_feat, s_feat):
    """One image, one 2x2 level of stride 8 (points (0,0), (8,0), (0,8), (8,8)), one GT box (-1,-1,9,4) that holds
    (0,0) and (8,0) strictly; the teacher predicts the GT box exactly (IoU 1) with class-0 probabilities 0.9 and
    0.5 there, so with K = 2 both in-box points are the candidates for either xi."""
    gt = torch.tensor([[-1.0, -1.0, 9.0, 4.0]])
    boxes = gt.expand(4, 4)[None].clone()
    cls_prob = torch.tensor([[[0.9, 0.1], [0.5, 0.1], [0.2, 0.1], [0.3, 0.1]]])
    return make_ctx([s_feat], [t_feat], [s_feat.clone()], [t_feat.clone()], [(2, 2)], [8], cls_prob, boxes,
                    [gt], [torch.tensor([0])])


def test_uniform_attention_case_by_hand():
    # F^T = 1 everywhere: P^T = 1 and A^T = 1 (Eq. 7); F^S = 0: P^S = A^S = 1 too, so both attention losses are 0
    # and every squared difference is 1.
    t = torch.ones(1, 2, 2, 2)
    s = torch.zeros(1, 2, 2, 2, requires_grad=True)
    loss = PGDLoss(detector='atss', k=2, alpha=0.08)   # beta 0.04, gamma 0.128
    out = loss(one_object_case(t, s))
    # Eq. 2: mu = (4, 0), Sigma = diag(16, 0) + r I (the deterministic regulariser r = 0.05^2 / 3);
    # Eq. 3 at (0,0) and (8,0): d = (-/+4, 0) -> g = exp(-1/2 * 16 / (16 + r)); Eq. 4: M = g / 2 at both.
    g = math.exp(-0.5 * 16.0 / (16.0 + NOISE_VARIANCE))
    # Eq. 5: sum_c sum_ij (alpha M + beta N) = C (alpha (g/2 + g/2) + beta (1/2 + 1/2)), N = 1/2 at the 2 bg pixels
    assert out['loss_pgd_cls_fea'].item() == pytest.approx(2 * (0.08 * g + 0.04), rel=1e-6)
    # Eq. 6: gamma sum_c sum_ij M^reg = C gamma g
    assert out['loss_pgd_reg_fea'].item() == pytest.approx(2 * 0.128 * g, rel=1e-6)
    assert out['loss_pgd_cls_att'].item() == pytest.approx(0.0, abs=1e-9)
    assert out['loss_pgd_reg_att'].item() == pytest.approx(0.0, abs=1e-9)
    total = sum(out.values())
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_k1_puts_full_weight_on_the_best_location():
    t = torch.ones(1, 2, 2, 2)
    s = torch.zeros(1, 2, 2, 2)
    out = PGDLoss(detector='atss', k=1, alpha=0.08)(one_object_case(t, s))
    # K = 1: the Gaussian sits on the single candidate (0, 0): g = 1, M = 1 there
    assert out['loss_pgd_cls_fea'].item() == pytest.approx(2 * (0.08 * 1 + 0.04), rel=1e-6)
    assert out['loss_pgd_reg_fea'].item() == pytest.approx(2 * 0.128, rel=1e-6)


# ---------------------------------------------------------------- independent loop implementation of Eqs. 5-9
def eq7(f, tau):
    c, h, w = f.shape
    s = np.abs(f).sum(0) / tau
    p = h * w * np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    a = np.empty_like(f)
    for i in range(h):
        for j in range(w):
            e = np.exp(np.abs(f[:, i, j]) / tau - (np.abs(f[:, i, j]) / tau).max())
            a[:, i, j] = c * e / e.sum()
    return p, a


def loop_loss(fs, ft, gs, gt_, imp_cls, imp_reg, bg, alpha, beta, gamma, delta, tau):
    """Per image, per level (Eqs. 4-9), mean over images."""
    total = dict(cls_fea=0.0, cls_att=0.0, reg_fea=0.0, reg_att=0.0)
    n = fs[0].shape[0]
    for lvl in range(len(fs)):
        for b in range(n):
            c, h, w = fs[lvl][b].shape
            p_t, a_t = eq7(ft[lvl][b], tau)
            p_s, a_s = eq7(fs[lvl][b], tau)
            ic, ir, bk = imp_cls[lvl][b], imp_reg[lvl][b], bg[lvl][b]
            m_cls = ic / max((ic != 0).sum(), 1e-10)
            m_bg = bk / max(bk.sum(), 1e-10)
            m_reg = ir / max((ir != 0).sum(), 1e-10)
            d2 = (ft[lvl][b] - fs[lvl][b]) ** 2
            for k in range(c):
                for i in range(h):
                    for j in range(w):
                        total['cls_fea'] += (alpha * m_cls[i, j] + beta * m_bg[i, j]) * p_t[i, j] * \
                            a_t[k, i, j] * d2[k, i, j] / n
            total['cls_att'] += delta * (np.abs(p_t - p_s).mean() + np.abs(a_t - a_s).mean()) / n
            pt_r, at_r = eq7(gt_[lvl][b], tau)
            ps_r, as_r = eq7(gs[lvl][b], tau)
            d2r = (gt_[lvl][b] - gs[lvl][b]) ** 2
            total['reg_fea'] += gamma * (m_reg[None] * at_r * d2r).sum() / n
            on = ir != 0
            if on.any():
                total['reg_att'] += delta * (np.abs(at_r - as_r) * on[None]).sum() / (c * on.sum()) / n
    return total


def test_random_two_images_two_levels_match_loop():
    g = torch.Generator().manual_seed(0)
    sizes, strides = [(4, 4), (2, 2)], [8, 16]
    a = 20
    feats = [[torch.rand(2, 3, h, w, generator=g) for h, w in sizes] for _ in range(4)]
    s_cls, t_cls, s_reg, t_reg = feats
    gt_boxes = [torch.tensor([[2.0, 2.0, 20.0, 18.0], [15.0, 1.0, 30.0, 30.0]]), torch.tensor([[5.0, 5.0, 26.0, 12.0]])]
    gt_labels = [torch.tensor([0, 1]), torch.tensor([1])]
    cls_prob = torch.rand(2, a, 2, generator=g)
    ctr = torch.rand(2, a, 2, generator=g) * 32
    boxes = torch.cat([ctr - 6, ctr + 6], -1)
    ctx = make_ctx(s_cls, t_cls, s_reg, t_reg, sizes, strides, cls_prob, boxes, gt_boxes, gt_labels)
    loss = PGDLoss(detector='fcos', k=5, tau=0.8)   # paper preset: alpha 0.04 for anchor-free FCOS
    assert loss.settings.alpha == pytest.approx(0.04)
    out = loss(ctx)
    cls_imp, reg_imp, bg = loss.importance(ctx)
    # the importance is in [0, 1], non-zero only inside boxes and on at most K locations per object (Eq. 3)
    for imp in (cls_imp, reg_imp):
        flat = torch.cat([m.flatten(1) for m in imp], 1)
        assert ((flat >= 0) & (flat <= 1)).all()
        assert ((flat > 0).sum(1) <= torch.tensor([2 * 5, 5])).all()
        assert (flat[0] > 0).any() and (flat[1] > 0).any()
    ref = loop_loss([x.numpy() for x in s_cls], [x.numpy() for x in t_cls], [x.numpy() for x in s_reg],
                    [x.numpy() for x in t_reg], [m.numpy() for m in cls_imp], [m.numpy() for m in reg_imp],
                    [m.numpy() for m in bg], 0.04, 0.02, 0.064, 8e-4, 0.8)
    for key in ref:
        assert out[f'loss_pgd_{key}'].item() == pytest.approx(ref[key], rel=1e-4), key


def test_branches_select_losses_and_neck_uses_cls_mask():
    g = torch.Generator().manual_seed(1)
    t = torch.rand(1, 2, 2, 2, generator=g)
    s = torch.rand(1, 2, 2, 2, generator=g)
    base = one_object_case(t, s)
    full = PGDLoss(detector='atss', k=2)(base)
    assert set(full) == {'loss_pgd_cls_fea', 'loss_pgd_cls_att', 'loss_pgd_reg_fea', 'loss_pgd_reg_att'}
    reg_only = PGDLoss(detector='atss', k=2, branches=['reg'])(base)
    assert set(reg_only) == {'loss_pgd_reg_fea', 'loss_pgd_reg_att'}
    assert reg_only['loss_pgd_reg_fea'] == full['loss_pgd_reg_fea']
    # 'neck' = the cls-branch loss (cls mask, background, P and A) on the FPN outputs: same features, same value
    neck = PGDLoss(detector='atss', k=2, branches=['neck'])(base)
    assert set(neck) == {'loss_pgd_neck_fea', 'loss_pgd_neck_att'}
    assert neck['loss_pgd_neck_fea'].item() == pytest.approx(full['loss_pgd_cls_fea'].item())
    base.student.neck = [s * 2]
    assert PGDLoss(detector='atss', k=2, branches=['neck'])(base)['loss_pgd_neck_fea'] != neck['loss_pgd_neck_fea']


def test_fg_strategy_box_weights_every_inside_location():
    t = torch.ones(1, 2, 2, 2)
    s = torch.zeros(1, 2, 2, 2)
    out = PGDLoss(detector='atss', fg_strategy='box', alpha=0.08)(one_object_case(t, s))
    # Box: I = 1 at both in-box points -> M = 1/2 each -> C (alpha + beta)
    assert out['loss_pgd_cls_fea'].item() == pytest.approx(2 * (0.08 + 0.04), rel=1e-6)


def test_settings_follow_detector_and_overrides():
    loss = MODELS.build(dict(type='PGDLoss'))
    loss.bind_detector('gfl')   # the paper's anchor-free group
    assert (loss.settings.alpha, loss.settings.beta, loss.settings.gamma) == pytest.approx((0.04, 0.02, 0.064))
    loss = PGDLoss(alpha=0.03, k=15)
    loss.bind_detector('atss')
    assert (loss.settings.alpha, loss.settings.beta, loss.settings.gamma, loss.settings.k) == \
        pytest.approx((0.03, 0.015, 0.048, 15))
    with pytest.raises(ConfigError, match='atss'):
        PGDLoss(detector='atss').bind_detector('fcos')
    with pytest.raises(ConfigError, match='branches'):
        PGDLoss(branches=['cls', 'head'])
    with pytest.raises(ConfigError, match='fg_strategy'):
        PGDLoss(fg_strategy='boxes')
    code = PGDLoss(preset='code')
    code.bind_detector('gfl')
    assert code.adapter_options() == {'gfl_decode_stride_bug': True}
    assert code.settings.k == 30 and code.settings.spatial_reduce == 'mean'
    assert PGDLoss(detector='gfl').adapter_options() == {}
    with pytest.raises(ConfigError, match='supports only'):
        PGDLoss.check_detector('retinanet')


def test_missing_teacher_predictions_is_a_clear_error():
    t = torch.ones(1, 2, 2, 2)
    ctx = one_object_case(t, t.clone())
    ctx.teacher_pred = None
    with pytest.raises(ValueError, match='teacher_pred'):
        PGDLoss(detector='atss')(ctx)


def test_pad_gt_and_dense_prediction_checks():
    boxes, labels, valid = pad_gt([torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), torch.zeros(0, 4)],
                                  [torch.tensor([3, 1]), torch.zeros(0, dtype=torch.long)])
    assert boxes.shape == (2, 2, 4) and boxes[1].abs().sum() == 0
    assert labels.tolist() == [[3, 1], [-1, -1]]
    assert valid.tolist() == [[True, True], [False, False]]
    # a batch without any object still has an object axis of 1 (all padding)
    b, l, v = pad_gt([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    assert b.shape == (1, 1, 4) and not v.any()
    with pytest.raises(ValueError, match='image 0'):
        pad_gt([torch.zeros(2, 4)], [torch.zeros(3, dtype=torch.long)])
    with pytest.raises(ValueError, match='points'):
        DensePredictions(points=torch.zeros(3, 2), level=torch.zeros(4, dtype=torch.long), level_sizes=[(2, 2)],
                         strides=[8], boxes=torch.zeros(1, 4, 4), cls_prob=torch.zeros(1, 4, 2),
                         valid=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='valid'):
        DensePredictions(points=torch.zeros(4, 2), level=torch.zeros(4, dtype=torch.long), level_sizes=[(2, 2)],
                         strides=[8], boxes=torch.zeros(1, 4, 4), cls_prob=torch.zeros(1, 4, 2),
                         valid=torch.ones(1, 4))


@pytest.mark.parametrize('detector,backbone,dataset,alpha,tau', [
    ('atss', 'r50', 'coco', 0.08, 0.8),
    ('ddod', 'r50', 'coco', 0.08, 0.8),
    ('fcos', 'r50', 'coco', 0.04, 0.8),
    ('gfl', 'r50', 'coco', 0.04, 0.8),
    ('autoassign', 'r50', 'coco', 0.04, 0.4),
    ('atss', 'mbv2', 'coco', 0.04, 0.8),
    ('ddod', 'r50', 'crowdhuman', 0.001, 0.8),
])
def test_configs_distill_pgd_hyper_parameters(detector, backbone, dataset, alpha, tau):
    from pgd.config import compose_config

    cfg = compose_config(detector, backbone, 'mini', 'student', dataset=dataset, method='pgd',
                         teacher=dict(config='teacher/config.py', checkpoint='teacher/model.pth'))
    model = cfg.model
    assert model.type == 'DistillDetector' and model.init_student is True
    assert model.teacher_guided_assign == 'auto'   # resolved by the distiller: True for DDOD only
    (kd,) = model.kd_losses
    loss = MODELS.build(kd)
    loss.bind_detector(detector)
    s = loss.settings
    assert (s.alpha, s.beta, s.gamma, s.delta, s.tau, s.k, s.xi_cls, s.xi_reg) == pytest.approx(
        (alpha, alpha / 2, 1.6 * alpha, 8e-4, tau, 30, 0.8, 0.6))
    assert s.fg_strategy == 'pgw' and loss.branches == ('cls', 'reg')
    # a matrix row's method_overrides win over the per-detector values, beta / gamma follow alpha
    over = compose_config(detector, backbone, 'mini', 'student', dataset=dataset, method='pgd',
                          method_overrides=dict(alpha=0.2, k=15, branches=['neck']),
                          teacher=dict(config='t/config.py', checkpoint='t/model.pth')).model.kd_losses[0]
    loss = MODELS.build(over)
    loss.bind_detector(detector)
    assert (loss.settings.alpha, loss.settings.gamma, loss.settings.k, loss.branches) == (
        0.2, pytest.approx(0.32), 15, ('neck',))
