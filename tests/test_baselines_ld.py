"""LD against mmdet's own LDHead (same weights, same student assignment), its region helpers by hand, and its
options."""
import math

import pytest
import torch
from mmdet.models.dense_heads import GFLHead, LDHead
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

import pgd.losses  # noqa: F401
from pgd.losses.base import ConfigError, FeatureSet, KDContext, gt_from_data_samples
from pgd.losses.ld import LDLoss, atss_iou_threshold, diou

torch.set_num_threads(1)

HEAD = dict(
    num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1, reg_max=16,
    norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
    anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                          strides=[8, 16, 32, 64, 128]),
    loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
    loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
    loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False))


def samples():
    out = []
    images = (([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 44.0]], [0, 2]), ([[10.0, 12.0, 34.0, 30.0]], [1]))
    for boxes, labels in images:
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), batch_input_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor(boxes), labels=torch.tensor(labels))
        out.append(s)
    return out


def ld_setup(seed=0, same_teacher=False):
    torch.manual_seed(seed)
    head = GFLHead(**HEAD)
    feats = [torch.randn(2, 8, s, s) for s in (8, 4, 2, 1, 1)]
    s_cls, s_reg = head(feats)
    if same_teacher:
        t_cls, t_reg = [c.detach().clone() for c in s_cls], [r.detach().clone() for r in s_reg]
    else:
        t_cls = [c.detach() + torch.randn_like(c) for c in s_cls]
        t_reg = [r.detach() + 2 * torch.randn_like(r) for r in s_reg]
    ds = samples()
    boxes, labels, valid = gt_from_data_samples(ds)
    t_neck = [f + 0.1 * torch.randn_like(f) for f in feats] if not same_teacher else [f.clone() for f in feats]
    ctx = KDContext(student=FeatureSet(neck=feats, cls_feat=[], reg_feat=[], head_outs=(s_cls, s_reg)),
                    teacher=FeatureSet(neck=t_neck, cls_feat=[], reg_feat=[], head_outs=(t_cls, t_reg)),
                    teacher_pred=None, gt_boxes=boxes, gt_labels=labels, gt_valid=valid,
                    batch_input_shape=(64, 64), img_shapes=[(64, 64)] * 2, student_head=head,
                    batch_data_samples=ds)
    return head, ctx


def test_ld_main_region_equals_mmdet_ldhead():
    head, ctx = ld_setup()
    ours = LDLoss(loss_weight=0.25, temp=10.0)(ctx)
    assert set(ours) == {'loss_ld'}
    ref_head = LDHead(loss_ld=dict(type='KnowledgeDistillationKLDivLoss', loss_weight=0.25, T=10), **HEAD)
    ref_head.load_state_dict(head.state_dict())
    s_cls, s_reg = ctx.student.head_outs
    ds = ctx.batch_data_samples
    ref = ref_head.loss_by_feat(s_cls, s_reg, [d.gt_instances for d in ds], [d.metainfo for d in ds],
                                ctx.teacher.head_outs[1])
    expected = sum(ref['loss_ld'])
    assert expected > 0
    torch.testing.assert_close(ours['loss_ld'], expected)


def test_ld_gradients_reach_student_box_branch_only():
    head, ctx = ld_setup()
    t_reg = ctx.teacher.head_outs[1]
    loss = LDLoss(vlr_weight=0.25, cls_kd_weight=5.0, imitation_weight=2.0)(ctx)
    assert set(loss) == {'loss_ld', 'loss_ld_vlr', 'loss_ld_kd', 'loss_ld_im'}
    assert all(torch.isfinite(v) and v > 0 for v in loss.values())
    sum(loss.values()).backward()
    assert head.gfl_reg.weight.grad.abs().sum() > 0 and head.gfl_cls.weight.grad.abs().sum() > 0
    assert all(not r.requires_grad and r.grad is None for r in t_reg)


def test_ld_is_zero_when_student_equals_teacher():
    _, ctx = ld_setup(same_teacher=True)
    out = LDLoss(vlr_weight=0.25, cls_kd_weight=5.0, imitation_weight=2.0)(ctx)
    for k, v in out.items():
        assert abs(float(v.detach())) < 1e-6, k


def test_ld_rejects_other_heads_and_reg_max_mismatch():
    _, ctx = ld_setup()
    ctx.student_head = torch.nn.Conv2d(1, 1, 1)
    with pytest.raises(ConfigError, match='GFL head'):
        LDLoss()(ctx)
    head, ctx = ld_setup()
    head.reg_max = 8
    with pytest.raises(ConfigError, match='reg_max'):
        LDLoss()(ctx)
    with pytest.raises(ConfigError, match="only GFL has"):
        LDLoss.check_detector('atss')


def test_atss_threshold_and_diou_by_hand():
    gt = torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]])                       # centre (0, 0)
    anchors = torch.tensor([[0.0, -1.0, 2.0, 1.0], [1.0, -1.0, 3.0, 1.0], [2.0, -1.0, 4.0, 1.0]])  # centres 1, 2, 3
    iou = torch.tensor([[[0.2, 0.6, 0.9]]])
    # top-2 closest: IoUs 0.2, 0.6 -> mean 0.4 + unbiased std 0.2 sqrt 2
    thr = atss_iou_threshold(gt, anchors, iou, [3], topk=2)
    torch.testing.assert_close(thr, torch.tensor([[0.4 + 0.2 * math.sqrt(2)]]))
    d, i = diou(gt, anchors)
    # anchor 0: IoU 2/6; centre distance^2 1; enclosing box 3 x 2 -> c^2 = 13
    torch.testing.assert_close(i[0, 0, 0], torch.tensor(1 / 3))
    torch.testing.assert_close(d[0, 0, 0], torch.tensor(1 / 3 - 1 / 13))


def test_vlr_region_and_weight_by_hand():
    # GT [0,0,4,4]; anchors a0 = the GT (IoU 1), a1 shifted by 2 (IoU 1/3, DIoU 1/3 - 4/52), a2 by 4 (IoU 0)
    # ATSS thr over the 3 candidates: mean 4/9 + std -> 0.9536; VLR = DIoU in [0.25 thr, thr) = {a1}, weight 1/3
    gt = torch.tensor([[[0.0, 0.0, 4.0, 4.0]]])
    anchors = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 0.0, 6.0, 4.0], [4.0, 0.0, 8.0, 4.0]])
    d, iou = diou(gt, anchors)
    torch.testing.assert_close(d[0, 0], torch.tensor([1.0, 1 / 3 - 4 / 52, -0.2]))
    ious = torch.tensor([1.0, 1 / 3, 0.0])
    thr = float(ious.mean() + ious.std())
    assert 0.25 * thr < 1 / 3 - 4 / 52 < thr
    ctx = KDContext(student=FeatureSet(neck=[], head_outs=()), teacher=FeatureSet(neck=[], head_outs=()), teacher_pred=None,
                    gt_boxes=gt, gt_labels=torch.zeros(1, 1, dtype=torch.long),
                    gt_valid=torch.ones(1, 1, dtype=torch.bool), batch_input_shape=(8, 8), img_shapes=[(8, 8)])
    s = torch.zeros(1, 3, 4, 2)
    t = torch.zeros(1, 3, 4, 2)
    t[0, 1, :, 1] = math.log(3.0)          # only a1 differs: KL per edge = kl / 2 bins (T = 1)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    loss = LDLoss(vlr_weight=0.5, vlr_temp=1.0, vlr_topk=3)
    none = torch.zeros(1, 3, dtype=torch.bool)
    out = loss.vlr_loss(ctx, s, t, none, anchors, [3])
    torch.testing.assert_close(out, torch.tensor(0.5 * (1 / 3) * 4 * (kl / 2) / 16))
    # a main-region positive is not counted again in VLR
    pos = torch.tensor([[False, True, False]])
    assert loss.vlr_loss(ctx, s, t, pos, anchors, [3]) == 0


def test_cls_kd_and_imitation_normalisation_by_hand():
    loss = LDLoss(cls_kd_weight=5.0, cls_kd_temp=1.0, imitation_weight=2.0, imitation_psi=0.5)
    # two levels with 2 and 1 locations; positives: both of level 0, none of level 1
    s = torch.zeros(1, 3, 2)
    t = torch.zeros(1, 3, 2)
    t[0, 0, 1] = t[0, 1, 1] = t[0, 2, 1] = math.log(3.0)
    pos = torch.tensor([[True, True, False]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    # level 0: (kl/2 + kl/2) / 2 positives; level 1: no positive -> 0 (its KL is ignored)
    torch.testing.assert_close(loss.cls_kd_loss(s, t, pos, [2, 1]), torch.tensor(5.0 * kl / 2))
    # imitation: anchors of 1x2 (side 4) and 1x1 (side 8) maps; the GT equals anchor 0 -> IoU 1, threshold 0.5;
    # anchor 2 = [0,0,8,4] has IoU 0.5, not > 0.5, so level 1 has no masked location
    anchors = torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 0.0, 8.0, 4.0], [0.0, 0.0, 8.0, 4.0]])
    fs = [torch.zeros(1, 2, 1, 2), torch.zeros(1, 2, 1, 1)]
    ft = [torch.zeros(1, 2, 1, 2), torch.ones(1, 2, 1, 1)]
    ft[0][0, :, 0, 0] = torch.tensor([1.0, 3.0])          # masked location: squared error 1 + 9 over C = 2
    ft[0][0, :, 0, 1] = 5.0                               # unmasked
    ctx = KDContext(student=FeatureSet(neck=fs, head_outs=()), teacher=FeatureSet(neck=ft, head_outs=()), teacher_pred=None,
                    gt_boxes=torch.tensor([[[0.0, 0.0, 4.0, 4.0]]]), gt_labels=torch.zeros(1, 1, dtype=torch.long),
                    gt_valid=torch.ones(1, 1, dtype=torch.bool), batch_input_shape=(4, 8), img_shapes=[(4, 8)])
    torch.testing.assert_close(loss.imitation_loss(ctx, anchors, [2, 1]), torch.tensor(2.0 * 10 / 2))
