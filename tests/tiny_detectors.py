"""Tiny versions of the five PGD detectors for fast tests (mmdet's own configs with a narrow ResNet-18 and FPN).

Teacher and student differ in backbone width, so their FPN lateral convs differ in shape while the FPN output
convs and the heads match, as with R101 -> MobileNetV2 students.
"""
from __future__ import annotations

import copy
import random
from contextlib import contextmanager

import numpy as np
import torch
import os

import mmdet
from mmengine.config import Config, ConfigDict
from mmdet.testing import demo_mm_inputs

MMDET_CONFIGS = {
    'fcos': 'fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py',
    'autoassign': 'autoassign/autoassign_r50-caffe_fpn_1x_coco.py',
    'atss': 'atss/atss_r50_fpn_1x_coco.py',
    'gfl': 'gfl/gfl_r50_fpn_1x_coco.py',
    'ddod': 'ddod/ddod_r50_fpn_1x_coco.py',
}
DETECTORS = tuple(MMDET_CONFIGS)
NUM_CLASSES = 4
FEAT = 32   # head width; GN(32 groups) needs a multiple of 32


def tiny_detector_cfg(detector: str, width: int = 8, iou_head: bool | None = None) -> ConfigDict:
    """ATSS gets PGD's IoU-branch head (ATSSIoUHead) unless iou_head=False."""
    if iou_head is None:
        iou_head = detector == 'atss'
    cfg_dir = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')
    cfg = copy.deepcopy(Config.fromfile(os.path.join(cfg_dir, MMDET_CONFIGS[detector])).model)
    cfg.backbone = dict(type='ResNet', depth=18, base_channels=width, num_stages=4, out_indices=(1, 2, 3),
                        frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                        style='pytorch', init_cfg=None)
    cfg.neck = dict(type='FPN', in_channels=[2 * width, 4 * width, 8 * width], out_channels=FEAT, start_level=0,
                    add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True)
    cfg.bbox_head.update(num_classes=NUM_CLASSES, in_channels=FEAT, feat_channels=FEAT, stacked_convs=2)
    if iou_head:
        cfg.bbox_head.type = 'ATSSIoUHead'
        cfg.bbox_head.pop('loss_centerness', None)
    cfg.test_cfg = ConfigDict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
                        max_per_img=100)
    return cfg


def tiny_batch(model, shapes=((3, 96, 96), (3, 80, 64)), num_items=(3, 2), training=True, seed=0):
    """A preprocessed batch (inputs, data_samples) of random images with random GT boxes."""
    torch.manual_seed(seed)
    packed = demo_mm_inputs(batch_size=len(shapes), image_shapes=list(shapes), num_items=list(num_items),
                            num_classes=NUM_CLASSES)
    data = model.data_preprocessor(packed, training)
    return data['inputs'], data['data_samples']


@contextmanager
def no_global_random_draws():
    """Fail if the block draws from torch's, numpy's or Python's global generator. A resumed training is exact
    because mmengine replays the data pipeline, the only consumer of those generators (docs/pipeline.md): a
    training step that drew from them would make every resumed run diverge from the uninterrupted one."""
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    yield
    assert torch.equal(torch.get_rng_state(), before[0]), "a training step drew from torch's global generator"
    assert np.array_equal(np.random.get_state()[1], before[1]), "a training step drew from numpy's global generator"
    assert random.getstate() == before[2], "a training step drew from Python's global generator"
