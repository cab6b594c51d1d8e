"""Detector adapters: DensePredictions must agree with each head's own predict_by_feat (NMS off, no filtering)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict

from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import pgd.models  # noqa: F401  (registers ATSSIoUHead etc.)
from pgd.losses.base import ConfigError
from pgd.models.adapters import build_adapter, detector_name

from tiny_detectors import DETECTORS, NUM_CLASSES, tiny_batch, tiny_detector_cfg

register_all_modules()
torch.set_num_threads(1)

# DDOD's DCN tower conv runs on the 1x1 P7 map thanks to pgd.models.layers' small-input fix
SHAPES = ((3, 96, 96), (3, 80, 64))
CASES = DETECTORS + ('atss_centerness',)   # 'atss' is the IoU-branch head; mmdet's own ATSSHead too


def _build(detector):
    torch.manual_seed(0)
    if detector == 'atss_centerness':
        model = MODELS.build(tiny_detector_cfg('atss', iou_head=False))
    else:
        model = MODELS.build(tiny_detector_cfg(detector))
    model.eval()
    inputs, samples = tiny_batch(model, shapes=SHAPES, training=False)
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(inputs))
    return model, outs, [s.metainfo for s in samples]


def _reference(head, outs, metas):
    """The head's own decoding, every (prior, class) pair kept: nms_pre larger than A, score_thr 0, no NMS."""
    cfg = ConfigDict(nms_pre=10 ** 9, score_thr=0.0, min_bbox_size=-1, max_per_img=10 ** 9)
    # the base class's predict_by_feat: ATSSIoUHead's own refuses to run without its IoU factors
    return BaseDenseHead.predict_by_feat(head, outs[0], outs[1], score_factors=None, batch_img_metas=metas,
                                         cfg=cfg, rescale=False, with_nms=False)


def _rows(scores, labels, boxes):
    """(score, label, box) rows sorted lexicographically, so that ties in score pair up deterministically."""
    rows = np.concatenate([scores[:, None], labels[:, None], boxes], axis=1).astype(np.float64)
    order = np.lexsort(rows.T[::-1])
    return rows[order]


@pytest.fixture(scope='module', params=CASES)
def built(request):
    return request.param, *_build(request.param)


def test_boxes_and_scores_match_predict_by_feat(built):
    detector, model, outs, metas = built
    dp = build_adapter(model).dense_predictions(outs, metas)
    ref = _reference(model.bbox_head, outs, metas)
    for n, meta in enumerate(metas):
        h, w = meta['img_shape']
        boxes = dp.boxes[n].clone()   # predict_by_feat clips to the image; the adapter does not
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        mine = _rows(dp.cls_prob[n].flatten().numpy(),
                     np.tile(np.arange(NUM_CLASSES), dp.num_points),
                     boxes.repeat_interleave(NUM_CLASSES, dim=0).numpy())
        theirs = _rows(ref[n].scores.numpy(), ref[n].labels.numpy(), ref[n].bboxes.numpy())
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-3)


def test_point_conventions(built):
    detector, model, outs, metas = built
    dp = build_adapter(model).dense_predictions(outs, metas)
    assert dp.strides == [8, 16, 32, 64, 128]
    h0, w0 = dp.level_sizes[0]
    assert type(model.bbox_head).__name__ == {'atss': 'ATSSIoUHead', 'atss_centerness': 'ATSSHead'}.get(
        detector, type(model.bbox_head).__name__)
    offset = 4.0 if detector == 'fcos' else 0.0   # FCOS points (j + 1/2) s; AutoAssign and anchors j s
    assert dp.points[0].tolist() == [offset, offset]
    assert dp.points[1].tolist() == [8 + offset, offset]
    assert dp.points[w0].tolist() == [offset, 8 + offset]   # row-major: second row starts after W_0 points
    first_p4 = h0 * w0
    assert dp.level[first_p4 - 1] == 0 and dp.level[first_p4] == 1
    assert dp.points[first_p4].tolist() == [2 * offset, 2 * offset]
    assert dp.cls_prob.shape == (2, dp.num_points, NUM_CLASSES)
    assert ((dp.cls_prob > 0) & (dp.cls_prob < 1)).all()


def test_validity(built):
    detector, model, outs, metas = built
    dp = build_adapter(model).dense_predictions(outs, metas)
    assert dp.valid[0].all()   # the first image fills the batch
    if detector in ('fcos', 'autoassign'):
        assert dp.valid.all()   # anchor-free heads use every point, padding included (docs/methods.md §1.2)
        return
    ph, pw = metas[1]['pad_shape']
    pts = dp.points
    stride = torch.tensor(dp.strides, dtype=torch.float32)[dp.level]
    # mmdet valid flags: column j valid iff j < ceil(pad_w / s); anchors centres are j * s
    expect = (pts[:, 0] / stride < torch.ceil(pw / stride)) & (pts[:, 1] / stride < torch.ceil(ph / stride))
    assert torch.equal(dp.valid[1], expect)
    assert not dp.valid[1].all()


def test_gfl_stride_bug_switch():
    model, outs, metas = _build('gfl')
    good = build_adapter(model).dense_predictions(outs, metas)
    bug = build_adapter(model, gfl_decode_stride_bug=True).dense_predictions(outs, metas)
    p3 = good.level == 0
    p4 = good.level == 1
    # image 0 uses stride 8 everywhere: right on P3; image 1 uses 16 everywhere: right on P4 only
    assert torch.allclose(bug.boxes[0, p3], good.boxes[0, p3])
    assert torch.allclose(bug.boxes[1, p4], good.boxes[1, p4])
    pts = good.points[p3]
    d_good = torch.cat([pts - good.boxes[1, p3, :2], good.boxes[1, p3, 2:] - pts], 1)
    d_bug = torch.cat([pts - bug.boxes[1, p3, :2], bug.boxes[1, p3, 2:] - pts], 1)
    assert torch.allclose(d_bug, 2 * d_good, atol=1e-4)


def test_mask_predictions_drops_exactly_the_masked():
    model, outs, metas = _build('fcos')
    adapter = build_adapter(model)
    a = sum(h * w for h, w in adapter.level_sizes(outs))
    keep = torch.ones(2, a, dtype=torch.bool)
    keep[0, [0, 5, 150]] = False
    keep[1, -1] = False   # the single P7 location
    masked = adapter.mask_predictions(outs, keep)
    ref = _reference(model.bbox_head, masked, metas)
    assert len(ref[0].scores) == (a - 3) * NUM_CLASSES
    assert len(ref[1].scores) == (a - 1) * NUM_CLASSES
    dp = adapter.dense_predictions(masked, metas)
    assert (dp.cls_prob[~keep] == 0).all() and (dp.cls_prob[keep] > 0).all()
    # with centerness as score factor and the real test_cfg, masking everything leaves no detection
    everything = adapter.mask_predictions(outs, torch.zeros_like(keep))
    full = model.bbox_head.predict_by_feat(*everything, batch_img_metas=metas, rescale=False)
    assert len(full[0]) == 0 and len(full[1]) == 0
    assert len(model.bbox_head.predict_by_feat(*outs, batch_img_metas=metas, rescale=False,
                                               cfg=ConfigDict(nms_pre=1000, score_thr=0.0, min_bbox_size=0,
                                                              nms=dict(type='nms', iou_threshold=0.6),
                                                              max_per_img=100))[0]) > 0
    with pytest.raises(ValueError, match='keep'):
        adapter.mask_predictions(outs, keep.float())
    with pytest.raises(ValueError, match='predictions'):
        adapter.mask_predictions(outs, keep[:, :-1])


def test_fcos_training_mode_teacher_rejected():
    model, outs, metas = _build('fcos')
    model.train()
    with pytest.raises(ConfigError, match='eval mode'):
        build_adapter(model).dense_predictions(outs, metas)


def test_unsupported_head_rejected():
    cfg = tiny_detector_cfg('atss')
    cfg.bbox_head.type = 'RetinaHead'
    cfg.bbox_head.pop('loss_centerness')
    head = MODELS.build(cfg.bbox_head)
    with pytest.raises(ConfigError, match='RetinaHead'):
        detector_name(head)
