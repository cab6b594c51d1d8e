"""ATSSIoUHead (PGD's IoU-branch ATSS) and the small-input DCN fix, checked against hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import pgd.models  # noqa: F401  (registration)
from mmcv.ops import DeformConv2d, DeformConv2dPack
from mmdet.registry import MODELS
from pgd.models.heads import ATSSIoUHead
from pgd.models.layers import SmallInputDeformConv2dPack

torch.set_num_threads(1)
STDS = (0.1, 0.1, 0.2, 0.2)


def make_head(num_classes: int = 3) -> ATSSIoUHead:
    init_default_scope('mmdet')
    head = MODELS.build(dict(
        type='ATSSIoUHead', num_classes=num_classes, in_channels=32, feat_channels=32, stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=4, scales_per_octave=1,
                              strides=[8, 16]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=list(STDS)),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_iou=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=ConfigDict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
                      max_per_img=100)))
    head.init_weights()
    return head


def hand_decode(anchor, delta):
    """DeltaXYWH decode written out (means 0, stds 0.1/0.1/0.2/0.2)."""
    ax, ay = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    cx, cy = ax + delta[0] * STDS[0] * aw, ay + delta[1] * STDS[1] * ah
    w, h = aw * math.exp(delta[2] * STDS[2]), ah * math.exp(delta[3] * STDS[3])
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def hand_iou_giou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def bce(logit, target):
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


@pytest.fixture(scope='module')
def case():
    """A 64x64 image, levels 8x8 (stride 8) and 4x4 (stride 16), two GT boxes, random head outputs."""
    torch.manual_seed(0)
    head = make_head()
    sizes = [(8, 8), (4, 4)]
    cls_scores = [torch.randn(1, 3, h, w) for h, w in sizes]
    bbox_preds = [0.5 * torch.randn(1, 4, h, w) for h, w in sizes]
    iou_preds = [torch.randn(1, 1, h, w) for h, w in sizes]
    gt = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 40.0, 34.0], [24.0, 20.0, 60.0, 62.0]]),
                      labels=torch.tensor([0, 2]))
    meta = dict(img_shape=(64, 64), pad_shape=(64, 64), batch_input_shape=(64, 64), scale_factor=(1.0, 1.0))
    return head, sizes, cls_scores, bbox_preds, iou_preds, gt, meta


def test_iou_targets_and_losses_match_hand_computation(case):
    head, sizes, cls_scores, bbox_preds, iou_preds, gt, meta = case
    losses = head.loss_by_feat(cls_scores, bbox_preds, iou_preds, [gt], [meta])
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_iou'}

    # positives and their GT from mmdet's own ATSS assignment (the part the head inherits unchanged)
    anchors, valid = head.get_anchors(sizes, [meta], device='cpu')
    _, labels, _, gt_boxes, _, _ = head.get_targets(anchors, valid, [gt], [meta])
    labels, gt_boxes = torch.cat(labels, 1)[0], torch.cat(gt_boxes, 1)[0]
    flat_anchors = torch.cat(head.prior_generator.grid_priors(sizes, device='cpu'))
    deltas = torch.cat([p[0].permute(1, 2, 0).reshape(-1, 4) for p in bbox_preds])
    logits = torch.cat([p[0].permute(1, 2, 0).reshape(-1) for p in iou_preds])
    pos = ((labels >= 0) & (labels < 3)).nonzero().squeeze(1).tolist()
    assert len(pos) >= 2  # both objects got positives

    exp_iou = exp_bbox = 0.0
    for i in pos:
        box = hand_decode(flat_anchors[i].tolist(), deltas[i].tolist())
        iou, giou = hand_iou_giou(box, gt_boxes[i].tolist())
        exp_iou += bce(float(logits[i]), iou)         # target = IoU(decoded prediction, its GT)
        exp_bbox += 2.0 * (1.0 - giou)                 # GIoU weight 2, no centerness weighting
    n = len(pos)
    assert float(sum(losses['loss_iou'])) == pytest.approx(exp_iou / n, rel=1e-4)
    assert float(sum(losses['loss_bbox'])) == pytest.approx(exp_bbox / n, rel=1e-4)
    assert all(torch.isfinite(v).all() for k in losses for v in losses[k])


def test_iou_loss_is_minimal_at_the_iou_target(case):
    """Setting each positive's IoU logit to logit(IoU target) makes the loss its entropy floor: the targets are
    exactly IoU(decoded prediction, GT); negatives contribute nothing."""
    head, sizes, cls_scores, bbox_preds, iou_preds, gt, meta = case
    anchors, valid = head.get_anchors(sizes, [meta], device='cpu')
    _, labels, _, gt_boxes, _, _ = head.get_targets(anchors, valid, [gt], [meta])
    labels, gt_boxes = torch.cat(labels, 1)[0], torch.cat(gt_boxes, 1)[0]
    flat_anchors = torch.cat(head.prior_generator.grid_priors(sizes, device='cpu'))
    deltas = torch.cat([p[0].permute(1, 2, 0).reshape(-1, 4) for p in bbox_preds])
    pos = ((labels >= 0) & (labels < 3)).nonzero().squeeze(1).tolist()
    targets = torch.full((flat_anchors.shape[0],), 0.5)
    floor = 0.0
    for i in pos:
        t, _ = hand_iou_giou(hand_decode(flat_anchors[i].tolist(), deltas[i].tolist()), gt_boxes[i].tolist())
        targets[i] = t
        floor += -(t * math.log(t) + (1 - t) * math.log(1 - t)) if 0 < t < 1 else 0.0
    logit = torch.logit(targets.clamp(1e-6, 1 - 1e-6))

    def per_level(flat):
        out, start = [], 0
        for h, w in sizes:
            out.append(flat[start:start + h * w].reshape(1, h, w, 1).permute(0, 3, 1, 2))
            start += h * w
        return out

    losses = head.loss_by_feat(cls_scores, bbox_preds, per_level(logit), [gt], [meta])
    best = float(sum(losses['loss_iou']))
    assert best == pytest.approx(floor / len(pos), rel=1e-4, abs=1e-6)
    for i in pos[:3]:  # nudging a positive's logit away from its target raises the loss
        bumped = logit.clone()
        bumped[i] += 1.0
        assert float(sum(head.loss_by_feat(cls_scores, bbox_preds, per_level(bumped), [gt], [meta])['loss_iou'])) > best
    neg = next(i for i in range(len(labels)) if labels[i] == 3)
    moved = logit.clone()
    moved[neg] += 5.0  # negatives carry no IoU loss
    assert float(sum(head.loss_by_feat(cls_scores, bbox_preds, per_level(moved), [gt], [meta])['loss_iou'])) \
        == pytest.approx(best, rel=1e-6)


def test_no_positives_gives_zero_box_and_iou_loss():
    head = make_head()
    sizes = [(4, 4), (2, 2)]
    outs = ([torch.randn(1, 3, h, w) for h, w in sizes], [torch.randn(1, 4, h, w) for h, w in sizes],
            [torch.randn(1, 1, h, w) for h, w in sizes])
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    meta = dict(img_shape=(32, 32), pad_shape=(32, 32), batch_input_shape=(32, 32))
    losses = head.loss_by_feat(*outs, [empty], [meta])
    assert float(sum(losses['loss_bbox'])) == 0.0 and float(sum(losses['loss_iou'])) == 0.0
    assert float(sum(losses['loss_cls'])) > 0


def test_predict_scores_are_cls_times_iou():
    head = make_head()
    head.eval()
    sizes = [(4, 4), (2, 2)]
    cls = [torch.full((1, 3, h, w), -12.0) for h, w in sizes]
    reg = [torch.zeros(1, 4, h, w) for h, w in sizes]
    iou = [torch.zeros(1, 1, h, w) for h, w in sizes]
    cls[0][0, 1, 2, 1] = 2.0    # one confident class-1 prediction at (row 2, col 1) of stride 8
    iou[0][0, 0, 2, 1] = -0.5
    reg[0][0, :, 2, 1] = torch.tensor([0.3, -0.2, 0.1, -0.1])
    meta = dict(img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32), scale_factor=(1.0, 1.0))
    (res,) = head.predict_by_feat(cls, reg, iou, batch_img_metas=[meta], rescale=False)
    assert len(res) == 1
    expected = torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(-0.5))
    assert float(res.scores[0]) == pytest.approx(float(expected), rel=1e-5)
    assert int(res.labels[0]) == 1
    anchor = head.prior_generator.grid_priors(sizes, device='cpu')[0][2 * 4 + 1].tolist()
    box = hand_decode(anchor, [0.3, -0.2, 0.1, -0.1])
    box = [min(max(v, 0.0), 32.0) for v in box]  # decode clips to the image at test time
    assert res.bboxes[0].tolist() == pytest.approx(box, abs=1e-4)
    with pytest.raises(ValueError, match='IoU logits'):
        head.predict_by_feat(cls, reg, batch_img_metas=[meta])


def test_forward_shapes_and_no_centerness():
    head = make_head()
    feats = (torch.randn(2, 32, 4, 4), torch.randn(2, 32, 2, 2))
    cls, reg, iou = head(feats)
    assert [t.shape for t in iou] == [(2, 1, 4, 4), (2, 1, 2, 2)]
    assert [t.shape for t in cls] == [(2, 3, 4, 4), (2, 3, 2, 2)]
    assert not hasattr(head, 'atss_centerness') and not hasattr(head, 'loss_centerness')
    with pytest.raises(TypeError, match='loss_centerness'):
        ATSSIoUHead(num_classes=3, in_channels=32, loss_centerness=dict(type='CrossEntropyLoss'))


# ---------------------------------------------------------------- small-input DCN

def _pair(seed: int = 0, cin: int = 4, cout: int = 6):
    torch.manual_seed(seed)
    ref = DeformConv2dPack(cin, cout, 3, padding=1)
    # non-zero offsets, so the deformable sampling (not just a plain conv) is exercised
    torch.nn.init.normal_(ref.conv_offset.weight, std=0.3)
    torch.nn.init.normal_(ref.conv_offset.bias, std=0.5)
    fixed = SmallInputDeformConv2dPack(cin, cout, 3, padding=1)
    fixed.load_state_dict(ref.state_dict())
    return ref, fixed


@pytest.mark.parametrize('size', [(3, 3), (5, 7), (8, 8)])
def test_dcn_fix_equals_original_on_large_inputs(size):
    ref, fixed = _pair()
    x = torch.randn(2, 4, *size)
    assert torch.equal(fixed(x), ref(x))


@pytest.mark.parametrize('size', [(1, 1), (2, 2), (1, 5), (2, 3)])
def test_dcn_fix_on_small_inputs(size):
    ref, fixed = _pair(seed=1)
    x = torch.randn(2, 4, *size)
    with pytest.raises(Exception, match='smaller than kernel'):
        ref(x)  # the bug being fixed
    out = fixed(x)
    assert out.shape == (2, 6, *size)
    # mmcv's own small-input path (DeformConv2d.forward pads x and the offset), offsets from the same conv
    expected = DeformConv2d.forward(ref, x, ref.conv_offset(x))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # with zero offsets DCN is a plain 3x3 conv with zero padding
    zero = SmallInputDeformConv2dPack(4, 6, 3, padding=1)
    zero.weight.data.copy_(ref.weight.data)
    torch.testing.assert_close(zero(x), F.conv2d(x, ref.weight, padding=1), rtol=1e-5, atol=1e-5)


def test_dcn_fix_gradients_on_1x1():
    _, fixed = _pair()
    x = torch.randn(1, 4, 1, 1, requires_grad=True)
    fixed(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert fixed.weight.grad is not None and fixed.conv_offset.weight.grad is not None


def test_dcn_registry_resolves_to_the_fix():
    for scope in ('mmdet', 'mmengine'):
        init_default_scope(scope)
        assert ROOT_MODELS.get('DCN') is SmallInputDeformConv2dPack
    init_default_scope('mmdet')
    assert MODELS.get('DCN') is SmallInputDeformConv2dPack
    assert MODELS.get('SmallInputDCN') is SmallInputDeformConv2dPack


@pytest.mark.parametrize('size', [(9, 11), (2, 2), (1, 1)])
def test_dcn_with_frozen_zero_offsets_is_exactly_a_conv(size):
    """Frozen all-zero offsets (the mini profile): the fast plain-conv path gives mmcv's DCN output and the same
    input / weight gradients; offsets that still train keep the DCN path (they get gradients)."""
    torch.manual_seed(0)
    conv = SmallInputDeformConv2dPack(8, 6, 3, padding=1)
    x = torch.randn(2, 8, *size, requires_grad=True)
    ref = conv(x)                                         # trainable offsets: mmcv's kernels
    ref.square().sum().backward()
    assert conv.conv_offset.weight.grad is not None
    ref_gx, ref_gw = x.grad.clone(), conv.weight.grad.clone()
    x.grad, conv.weight.grad = None, None

    conv.conv_offset.requires_grad_(False)
    assert conv.offsets_frozen_at_zero()
    out = conv(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    torch.testing.assert_close(x.grad, ref_gx, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(conv.weight.grad, ref_gw, atol=1e-4, rtol=1e-4)

    with torch.no_grad():
        conv.conv_offset.bias[0] = 0.5                    # a non-zero offset: never the plain conv
    assert not conv.offsets_frozen_at_zero()


def test_freeze_dcn_offsets_hook_freezes_only_offsets():
    from types import SimpleNamespace

    from pgd.models.layers.small_input_dcn import FreezeDCNOffsetsHook

    model = torch.nn.Sequential(SmallInputDeformConv2dPack(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1))
    FreezeDCNOffsetsHook().before_train(SimpleNamespace(model=model))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'0.conv_offset.weight', '0.conv_offset.bias'}
