"""Tiny datasets and detector configs for the train / eval / DDP tests (64 px, a few convs: CPU seconds).

The dataset is written here rather than through `pgd data` so these tests do not depend on the generator's
options; test_e2e goes through `pgd data` like a user.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CLASSES = ("square", "wide", "tall")
IMG = 64


def make_coco(root: Path, num_train: int = 8, num_val: int = 4, seed: int = 0) -> Path:
    """Filled rectangles of three aspect classes on noise; COCO json + PNGs under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(count):
            img = rng.integers(0, 60, size=(IMG, IMG, 3), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 3))):
                cls = int(rng.integers(0, 3))
                w, h = {0: (20, 20), 1: (32, 14), 2: (14, 32)}[cls]
                x, y = int(rng.integers(0, IMG - w)), int(rng.integers(0, IMG - h))
                img[y:y + h, x:x + w] = (np.array([220, 60, 60]) if cls == 0 else
                                         np.array([60, 220, 60]) if cls == 1 else np.array([60, 60, 220]))
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cls + 1, bbox=[x, y, w, h],
                                 area=w * h, iscrowd=0))
            name = f"{split}_{i:04d}.png"
            Image.fromarray(img).save(img_dir / name)
            images.append(dict(id=i + 1, file_name=name, width=IMG, height=IMG))
        cats = [dict(id=k + 1, name=n) for k, n in enumerate(CLASSES)]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return root


def tiny_atss(num_classes: int = 3) -> dict:
    """ATSS with a narrow ResNet-18 (8 base channels), 16-channel FPN and one-conv towers."""
    return dict(
        type="ATSS",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type="ResNet", depth=18, base_channels=8, num_stages=4, out_indices=(1, 2, 3),
                      frozen_stages=-1, norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False,
                      style="pytorch"),
        neck=dict(type="FPN", in_channels=[16, 32, 64], out_channels=16, start_level=0,
                  add_extra_convs="on_output", num_outs=5),
        bbox_head=dict(
            type="ATSSHead", num_classes=num_classes, in_channels=16, stacked_convs=1, feat_channels=16,
            norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
            anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8,
                                  scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
            loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=50))


def tiny_config_text(data_root: Path, max_iters: int = 4, interval: int = 2, batch: int = 2) -> str:
    """A complete mmengine config (Python source) training ``tiny_atss`` on ``make_coco``'s set."""
    root = str(data_root)
    return f"""
default_scope = 'mmdet'
model = {tiny_atss()!r}
metainfo = dict(classes={CLASSES!r})
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=({IMG}, {IMG}), keep_ratio=True), dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=({IMG}, {IMG}), keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                       'scale_factor'))]
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True), batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root={root!r}, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='images/train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=1), pipeline=train_pipeline))
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root={root!r}, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='images/val/'),
                 test_mode=True, pipeline=test_pipeline))
test_evaluator = dict(type='CocoMetric', ann_file={root + '/annotations/instances_val.json'!r}, metric='bbox')
train_cfg = dict(type='IterBasedTrainLoop', max_iters={max_iters}, val_interval={max_iters + 1})
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
                     clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = []
default_hooks = dict(timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval={interval}),
                     param_scheduler=dict(type='ParamSchedulerHook'),
                     checkpoint=dict(type='CheckpointHook', interval={interval}, by_epoch=False, max_keep_ckpts=2),
                     sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
log_level = 'WARNING'
visualizer = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')], name='visualizer')
"""


def train_tiny(work_dir: Path, data_root: Path, *extra: str, max_iters: int = 4) -> int:
    """`pgd train --config` on the tiny config, in-process, one thread, no MLflow."""
    from pgd import train

    config = work_dir.parent / f"{work_dir.name}_config.py"
    config.write_text(tiny_config_text(data_root, max_iters=max_iters))
    return train.main(["--config", str(config), "--work-dir", str(work_dir), "--no-mlflow", "--threads", "1",
                       *extra])


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("tiny_coco"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_coco) -> Path:
    """A run dir trained 4 iterations (checkpoints at 2 and 4) by `pgd train`."""
    threads = torch.get_num_threads()
    work_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    assert train_tiny(work_dir, tiny_coco) == 0
    torch.set_num_threads(threads)
    return work_dir
