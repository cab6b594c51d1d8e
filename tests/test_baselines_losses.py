"""KD baseline losses against hand-computed cases of their documented formulas (docs/baselines.md), gradients, and
configuration errors."""
import math

import pytest
import torch
from mmdet.registry import MODELS

import pgd.losses  # noqa: F401  (registration)
from pgd.losses.base import ConfigError, FeatureSet, KDContext
from pgd.losses.defeat import DeFeatLoss
from pgd.losses.fgd import FGDLoss, fgd_channel_attention, fgd_spatial_attention
from pgd.losses.fgfi import FGFILoss
from pgd.losses.fkd import FKDLoss, fkd_spatial_mask
from pgd.losses.frs import FRSLoss
from pgd.losses.ld import LDLoss, kd_kl

torch.set_num_threads(1)


def make_ctx(s_neck, t_neck, boxes, valid=None, batch_shape=(32, 32), s_cls=None, t_cls=None, iteration=0,
             img_shapes=None):
    n = s_neck[0].shape[0]
    boxes = torch.as_tensor(boxes, dtype=torch.float32).view(n, -1, 4)
    valid = torch.ones(boxes.shape[:2], dtype=torch.bool) if valid is None else valid
    labels = torch.where(valid, 0, -1)
    return KDContext(
        student=FeatureSet(neck=s_neck, cls_feat=[], reg_feat=[], head_outs=(s_cls or [],)),
        teacher=FeatureSet(neck=t_neck, cls_feat=[], reg_feat=[], head_outs=(t_cls or [],)),
        teacher_pred=None, gt_boxes=boxes, gt_labels=labels, gt_valid=valid, batch_input_shape=batch_shape,
        img_shapes=img_shapes or [batch_shape] * n, iteration=iteration)


def identity_conv_(conv):
    """Make a (C -> C, k x k) conv the identity map."""
    with torch.no_grad():
        conv.weight.zero_()
        k = conv.weight.shape[-1] // 2
        for c in range(conv.weight.shape[0]):
            conv.weight[c, c, k, k] = 1.0
        conv.bias.zero_()


# ------------------------------------------------------------------------------------------------------ FGD
def test_fgd_attention_hand_values():
    f = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    # HW softmax([0, ln 3] / 1) = 2 * [1/4, 3/4]
    torch.testing.assert_close(fgd_spatial_attention(f, 1.0), torch.tensor([[[0.5, 1.5]]]))
    g = torch.tensor([0.0, -math.log(3.0)]).view(1, 2, 1, 1)     # |F| per channel: 0, ln 3
    torch.testing.assert_close(fgd_channel_attention(g, 1.0), torch.tensor([[0.5, 1.5]]))
    # temperature 0.5 doubles the logits: softmax([0, 2 ln 3]) = [1/10, 9/10]
    torch.testing.assert_close(fgd_spatial_attention(f, 0.5), torch.tensor([[[0.2, 1.8]]]))


def test_fgd_loss_hand_case():
    # 4x4 map (stride 8), C = 2; teacher all ones; student flips the sign at (0, 0) and (3, 3): |F| unchanged,
    # so S = C = 1 for both and the attention term is 0; delta^2 = 4 per channel at the two flipped cells
    ft = torch.ones(1, 2, 4, 4)
    fs = ft.clone()
    fs[:, :, 0, 0] = fs[:, :, 3, 3] = -1
    loss = FGDLoss(in_channels=2, num_levels=1, temp=0.5, alpha_fg=1e-3, beta_bg=5e-4, gamma_att=5e-4,
                   lambda_glob=5e-6)
    out = loss(make_ctx([fs], [ft], [[0, 0, 8, 8]]))
    # fg: box -> rows/cols 0..1 at 1/4: (0,0) gives 1/4 * (4 + 4) = 2
    # bg: 12 cells of 1/12: (3,3) gives 8/12; att: 0; glob (GcBlocks start as identity): 16 / N
    torch.testing.assert_close(out['loss_fgd_fg'], torch.tensor(1e-3 * 2.0))
    torch.testing.assert_close(out['loss_fgd_bg'], torch.tensor(5e-4 * 8 / 12))
    torch.testing.assert_close(out['loss_fgd_att'], torch.tensor(0.0))
    torch.testing.assert_close(out['loss_fgd_glob'], torch.tensor(5e-6 * 16.0))


def test_fgd_attention_term_and_batch_normalisation():
    # teacher |F| = [0, ln 3] -> S_t = [0.5, 1.5]; student zeros -> S_s = [1, 1]; one channel -> C = 1 for both
    ft = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2).repeat(2, 1, 1, 1)
    fs = torch.zeros(2, 1, 1, 2)
    loss = FGDLoss(in_channels=1, num_levels=1, temp=1.0, gamma_att=1.0)
    out = loss(make_ctx([fs], [ft], [[0, 0, 1, 1], [0, 0, 1, 1]], batch_shape=(8, 16)))
    torch.testing.assert_close(out['loss_fgd_att'], torch.tensor(1.0))   # (2 images x 1) / N=2


def test_fgd_align_layer_only_when_channels_differ():
    assert FGDLoss(in_channels=8, num_levels=2).align is None
    loss = FGDLoss(in_channels=8, student_channels=4, num_levels=2)
    assert len(loss.align) == 2 and loss.align[0].in_channels == 4
    fs = [torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    ft = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    out = loss(make_ctx(fs, ft, [[0, 0, 9, 9]]))
    assert all(torch.isfinite(v) for v in out.values())


# --------------------------------------------------------------------------------------------------- DeFeat
def test_defeat_loss_hand_case():
    # 2x2 map (stride 8) of a 16x16 batch, C = 2, identity adapter; GT covers cell (0, 0) only
    ft = torch.zeros(1, 2, 2, 2)
    fs = torch.zeros(1, 2, 2, 2)
    fs[0, :, 0, 0] = 1.0          # fg: sum delta^2 = 2
    fs[0, 0, 1, 1] = 2.0          # bg: sum delta^2 = 4
    loss = DeFeatLoss(in_channels=2, num_levels=2, strides=(8, 16))
    identity_conv_(loss.adapters[0])
    identity_conv_(loss.adapters[1])
    out = loss(make_ctx([fs, torch.zeros(1, 2, 1, 1)], [ft, torch.zeros(1, 2, 1, 1)], [[0, 0, 8, 8]],
                        batch_shape=(16, 16)))
    # L_fg = 2 / (2 C 1) = 0.5, L_bg = 4 / (2 C 3) = 1/3; level 2 contributes 0; mean over L = 2 levels
    torch.testing.assert_close(out['loss_defeat_fg'], torch.tensor(3.0 * 0.5 / 2))
    torch.testing.assert_close(out['loss_defeat_bg'], torch.tensor(12.0 * (1 / 3) / 2))


def test_defeat_adapter_init_is_tiny_wrapped_normal():
    loss = DeFeatLoss(in_channels=16, num_levels=1, strides=(8,))
    w = loss.adapters[0].weight
    assert w.abs().max() < 2e-4 and w.abs().max() > 1e-5


def test_defeat_head_part_hand_case():
    # one fg cell (0, 0) and three bg cells; class logits K = 2, temperature 1
    n0 = torch.zeros(1, 2, 2, 2)
    zt = torch.zeros(1, 2, 2, 2)
    zt[0, 1, 0, 0] = math.log(3.0)               # teacher softmax at (0,0): [1/4, 3/4]; student uniform
    loss = DeFeatLoss(in_channels=2, num_levels=1, strides=(8,), head_kd=True, w_head_fg=2.0, w_head_bg=2.0)
    out = loss(make_ctx([n0], [n0], [[0, 0, 8, 8]], batch_shape=(16, 16), s_cls=[torch.zeros(1, 2, 2, 2)],
                        t_cls=[zt]))
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    torch.testing.assert_close(out['loss_defeat_head_fg'], torch.tensor(2.0 * kl))
    torch.testing.assert_close(out['loss_defeat_head_bg'], torch.tensor(0.0))


# ------------------------------------------------------------------------------------------------------ FRS
def frs_case():
    # 1x2 map, C = 1 feature, K = 2 classes; teacher logits [0,0] and [ln 3, 0] -> R = [0.5, 0.75], sum 1.25
    zt = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).view(1, 2, 1, 2)
    zs = torch.zeros(1, 2, 1, 2)
    ft = torch.tensor([2.0, 0.0]).view(1, 1, 1, 2)
    fs = torch.zeros(1, 1, 1, 2)
    return fs, ft, zs, zt


def test_frs_loss_hand_case_and_warmup():
    fs, ft, zs, zt = frs_case()
    loss = FRSLoss(in_channels=1, num_levels=1, w_feat=0.1, w_cls=0.05, warmup_iters=500)
    identity_conv_(loss.adapters[0])
    out = loss(make_ctx([fs], [ft], [[0, 0, 1, 1]], s_cls=[zs], t_cls=[zt], iteration=500))
    # feat: 0.5 * 2^2 / 1.25 = 1.6; cls: student logit 0 -> BCE = ln 2 per class whatever the target:
    # (0.5 * 2 ln 2 + 0.75 * 2 ln 2) / 1.25 = 2 ln 2
    torch.testing.assert_close(out['loss_frs_feat'], torch.tensor(0.1 * 1.6))
    torch.testing.assert_close(out['loss_frs_cls'], torch.tensor(0.05 * 2 * math.log(2.0)))
    half = loss(make_ctx([fs], [ft], [[0, 0, 1, 1]], s_cls=[zs], t_cls=[zt], iteration=250))
    torch.testing.assert_close(half['loss_frs_feat'], torch.tensor(0.5 * 0.1 * 1.6))
    zero = loss(make_ctx([fs], [ft], [[0, 0, 1, 1]], s_cls=[zs], t_cls=[zt], iteration=0))
    assert zero['loss_frs_cls'] == 0


def test_frs_rejects_mismatched_class_layout():
    fs, ft, zs, zt = frs_case()
    loss = FRSLoss(in_channels=1, num_levels=1)
    with pytest.raises(ConfigError, match='same classes'):
        loss(make_ctx([fs], [ft], [[0, 0, 1, 1]], s_cls=[torch.zeros(1, 3, 1, 2)], t_cls=[zt]))


# ------------------------------------------------------------------------------------------------------ FKD
def fkd_identity(loss):
    mod = loss.levels[0]
    identity_conv_(mod.feat_adapter)
    identity_conv_(mod.spatial_adapter)
    identity_conv_(mod.nl_adapter)
    with torch.no_grad():
        mod.channel_adapter.weight.copy_(torch.eye(mod.channel_adapter.weight.shape[0]))
        mod.channel_adapter.bias.zero_()


@pytest.mark.parametrize('variant,scale', [('a', 1.0), ('b', 6.0)])
def test_fkd_loss_hand_case(variant, scale):
    # C = 2, 2x2; teacher ones; student flips (0,0): |F| is uniform so the attention masks are all 1;
    # the NL blocks start as the identity (BN gamma = beta = 0)
    ft = torch.ones(1, 2, 2, 2)
    fs = ft.clone()
    fs[0, :, 0, 0] = -1
    loss = FKDLoss(in_channels=2, num_levels=1, variant=variant, nl_cfg=((2, 1),))
    fkd_identity(loss)
    out = loss(make_ctx([fs], [ft], [[0, 0, 4, 4]]))
    # AM: sqrt(2 channels x 2^2) = sqrt 8; channel: means [1,1] vs [0.5,0.5] -> sqrt(0.5);
    # spatial: mean_c differs by 2 at one cell -> 2; NL: ||F_t - F_s|| = sqrt 8
    torch.testing.assert_close(out['loss_fkd_am'], torch.tensor(scale * 7e-5 * math.sqrt(8)))
    torch.testing.assert_close(out['loss_fkd_channel'], torch.tensor(scale * 4e-3 * math.sqrt(0.5)))
    torch.testing.assert_close(out['loss_fkd_spatial'], torch.tensor(scale * 4e-3 * 2.0))
    torch.testing.assert_close(out['loss_fkd_nl'], torch.tensor(scale * 7e-5 * math.sqrt(8)))
    assert loss.temp == (0.5 if variant == 'a' else 0.1)


def test_fkd_spatial_mask_and_channel_mask_option():
    f = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    torch.testing.assert_close(fkd_spatial_mask(f, 1.0), torch.tensor([[[[0.5, 1.5]]]]))
    # channel |F| means differ -> with the channel mask the AM term changes, without it does not
    ft = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).repeat(1, 1, 2, 2)
    fs = torch.zeros(1, 2, 2, 2)
    a = FKDLoss(in_channels=2, num_levels=1, nl_cfg=((2, 1),), temp=1.0)
    b = FKDLoss(in_channels=2, num_levels=1, nl_cfg=((2, 1),), temp=1.0, use_channel_mask=True, w_am=7e-5)
    for m in (a, b):
        fkd_identity(m)
    # spatial masks uniform (=1); channel mask = 0.5 (2 softmax([1, 3]) + 1): weights per channel
    cm = 0.5 * (2 * torch.softmax(torch.tensor([1.0, 3.0]), 0) + 1)
    expected_b = 7e-5 * math.sqrt(4 * float(cm[0] * 1 + cm[1] * 9))
    ctx = make_ctx([fs], [ft], [[0, 0, 4, 4]])
    torch.testing.assert_close(a(ctx)['loss_fkd_am'], torch.tensor(7e-5 * math.sqrt(4 * 10)))
    torch.testing.assert_close(b(ctx)['loss_fkd_am'], torch.tensor(expected_b))


def test_fkd_nl_pool_shrinks_on_tiny_maps():
    loss = FKDLoss(in_channels=16, num_levels=5)
    fs = [torch.randn(2, 16, s, s) for s in (8, 4, 2, 1, 1)]
    ft = [torch.randn(2, 16, s, s) for s in (8, 4, 2, 1, 1)]
    out = loss(make_ctx(fs, ft, [[0, 0, 9, 9], [0, 0, 9, 9]], batch_shape=(64, 64)))
    assert all(torch.isfinite(v) for v in out.values())


# ----------------------------------------------------------------------------------------------------- FGFI
def test_fgfi_loss_hand_case_and_warmup():
    # one level, 1x4 map, stride 8, grid points (0,0), (8,0), (16,0), (24,0); anchors of side 8 (base scale 1);
    # GT equal to the anchor of location 1 -> mask [0, 1, 0, 0]
    ft = torch.zeros(1, 2, 1, 4)
    fs = torch.zeros(1, 2, 1, 4)
    fs[0, :, 0, 1] = 1.0       # masked: delta^2 = 2
    fs[0, 0, 0, 3] = 3.0       # outside the mask: ignored
    loss = FGFILoss(in_channels=2, num_levels=1, strides=(8,), anchor_base_scale=1.0, loss_weight=0.01,
                    warmup_iters=400)
    identity_conv_(loss.adapters[0])
    box = [[4, -4, 12, 4]]
    out = loss(make_ctx([fs], [ft], box, batch_shape=(8, 32), iteration=400))
    torch.testing.assert_close(out['loss_fgfi'], torch.tensor(0.01 * 2 / (2 * 1)))   # lambda sum / (2 sum I)
    early = loss(make_ctx([fs], [ft], box, batch_shape=(8, 32), iteration=399))
    assert early['loss_fgfi'] == 0 and early['loss_fgfi'].requires_grad


def test_fgfi_no_gt_gives_zero():
    loss = FGFILoss(in_channels=2, num_levels=1, strides=(8,), warmup_iters=0)
    valid = torch.zeros(1, 1, dtype=torch.bool)
    out = loss(make_ctx([torch.randn(1, 2, 2, 2)], [torch.randn(1, 2, 2, 2)], [[0, 0, 0, 0]], valid=valid))
    assert out['loss_fgfi'] == 0


# ------------------------------------------------------------------------------------------------------- LD
def test_kd_kl_is_bin_mean_times_t_squared():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, math.log(3.0)]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    torch.testing.assert_close(kd_kl(s, t, 1.0), torch.tensor([kl / 2]))
    p = torch.softmax(t[0] / 2, 0)
    kl2 = float((p * (p / 0.5).log()).sum())
    torch.testing.assert_close(kd_kl(s, t, 2.0), torch.tensor([4 * kl2 / 2]))


@pytest.mark.parametrize('detector', ['fcos', 'autoassign', 'atss', 'ddod'])
def test_ld_rejected_on_non_gfl_detectors(detector):
    with pytest.raises(ConfigError, match='only GFL has'):
        LDLoss.check_detector(detector)
    LDLoss.check_detector('gfl')


def test_other_baselines_accept_every_detector():
    for cls in (FGDLoss, DeFeatLoss, FRSLoss, FKDLoss, FGFILoss):
        for det in ('fcos', 'autoassign', 'atss', 'gfl', 'ddod'):
            cls.check_detector(det)


# ------------------------------------------------------------------------------------------ gradients (all)
def feature_ctx(channels=8, n=2, classes=3, iteration=1000):
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    s = [torch.randn(n, channels, h, w, requires_grad=True) for h, w in sizes]
    t = [torch.randn(n, channels, h, w) for h, w in sizes]
    zs = [torch.randn(n, classes, h, w, requires_grad=True) for h, w in sizes]
    zt = [torch.randn(n, classes, h, w) for h, w in sizes]
    boxes = [[2, 3, 30, 40], [10, 10, 60, 60]]
    return make_ctx(s, t, boxes, batch_shape=(64, 64), s_cls=zs, t_cls=zt, iteration=iteration)


@pytest.mark.parametrize('cfg', [
    dict(type='FGDLoss', in_channels=8),
    dict(type='DeFeatLoss', in_channels=8, head_kd=True),
    dict(type='FRSLoss', in_channels=8),
    dict(type='FKDLoss', in_channels=8),
    dict(type='FGFILoss', in_channels=8, warmup_iters=0),
])
def test_learnable_parts_and_student_get_gradients_teacher_does_not(cfg):
    torch.manual_seed(0)
    loss = MODELS.build(cfg)
    ctx = feature_ctx()
    out = loss(ctx)
    assert out and all(k.startswith('loss_') for k in out)
    total = sum(out.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    # levels without any masked location (FGFI on P6/P7 here) get exact zeros, but the graph reaches them all
    assert all(f.grad is not None for f in ctx.student.neck)
    assert ctx.student.neck[0].grad.abs().sum() > 0
    assert all(f.grad is None for f in ctx.teacher.neck) and all(not f.requires_grad for f in ctx.teacher.neck)
    params = dict(loss.named_parameters())
    assert params and all(p.grad is not None for p in params.values()), \
        [k for k, p in params.items() if p.grad is None]
    # at least one parameter of every trainable block of level P3 (which holds both GT boxes) moves
    blocks = {k.split('.')[0] + '.0' for k in params}
    for b in blocks:
        assert any(p.grad.abs().sum() > 0 for k, p in params.items() if k.startswith(b + '.')), b


def test_fgd_teacher_gcblock_is_trained_too():
    loss = FGDLoss(in_channels=8)
    ctx = feature_ctx()
    # move the student's GcBlock off the identity so that the global term has gradients everywhere
    with torch.no_grad():
        for p in loss.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sum(loss(ctx).values()).backward()
    assert loss.gc_teacher[0].channel_add[0].weight.grad.abs().sum() > 0
    assert loss.gc_student[0].conv_mask.weight.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    loss = FGDLoss(in_channels=8, num_levels=5)
    ctx = feature_ctx()
    ctx.student.neck = ctx.student.neck[:4]
    with pytest.raises(ValueError, match='5 levels'):
        loss(ctx)
    with pytest.raises(ValueError, match='box_scale'):
        FGDLoss(box_scale='pad_shape')
    with pytest.raises(ValueError, match='variant'):
        FKDLoss(variant='c')


def test_warmup_scaled_to_short_schedules():
    from mmengine.logging import MessageHub
    from pgd.losses.frs import scaled_warmup
    hub = MessageHub.get_current_instance()
    saved = hub.get_info('max_iters')
    try:
        hub.update_info('max_iters', 8796)          # a tenth of the 1x reference
        assert scaled_warmup(500, 87960) == pytest.approx(50.0)
        assert scaled_warmup(500, None) == 500.0     # option off: the literal value
        hub.update_info('max_iters', 200000)         # longer than the reference: never stretched
        assert scaled_warmup(400, 87960) == 400.0
        hub.update_info('max_iters', 8796)
        fs, ft, zs, zt = frs_case()
        loss = FRSLoss(in_channels=1, num_levels=1, warmup_iters=500, warmup_ref_iters=87960)
        identity_conv_(loss.adapters[0])
        out = loss(make_ctx([fs], [ft], [[0, 0, 1, 1]], s_cls=[zs], t_cls=[zt], iteration=25))
        torch.testing.assert_close(out['loss_frs_feat'], torch.tensor(0.5 * 0.1 * 1.6))   # 25 / 50
    finally:
        hub.update_info('max_iters', saved)
