"""The config tree and pgd.config.compose_config: all 15 detectors build and train a step; profiles set scale only."""
from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import pgd.models  # noqa: F401  (registration)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from pgd.config import (BACKBONES, DETECTORS, PROFILE_BACKBONE_KEYS, ConfigCompositionError, compose_config,
                        config_root)

torch.set_num_threads(1)
MMLogger.get_instance('mmengine').setLevel(logging.WARNING)  # init_weights logs every parameter
ALL = [(d, b) for d in DETECTORS for b in BACKBONES]
CUSTOM_IMPORTS = dict(imports=['pgd.data.datasets', 'pgd.models', 'pgd.losses'], allow_failed_imports=False)


def tiny_batch(n: int = 2, size: int = 64):
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8))
        meta = dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size), scale_factor=(1.0, 1.0))
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0 + i, 18.0, 60.0, 58.0]]),
                                           labels=torch.tensor([1, 4]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('detector,backbone', ALL)
def test_every_detector_builds_and_trains_one_step(detector, backbone):
    """64 px (P7 is 1x1: DDOD's DCN runs through the small-input fix), batch 2, mini profile (pretrained backbone:
    tests/conftest.py's stand-in checkpoints)."""
    init_default_scope('mmdet')
    torch.manual_seed(0)
    cfg = compose_config(detector, backbone, 'mini', 'student')
    assert cfg.custom_imports == CUSTOM_IMPORTS
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(tiny_batch(), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if k.startswith('loss'))
    assert torch.isfinite(total) and float(total) > 0
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reached {missing[:5]}'
    head_grad = sum(float(p.grad.abs().sum()) for p in model.bbox_head.parameters())
    backbone_grad = sum(float(p.grad.abs().sum()) for p in model.backbone.parameters() if p.grad is not None)
    assert head_grad > 0 and backbone_grad > 0
    # mini starts from the pretrained backbone with every BN frozen (eval mode, no affine grads), as the paper
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].weight.requires_grad


def test_architecture_details():
    init_default_scope('mmdet')
    atss = MODELS.build(compose_config('atss', 'r50', 'mini', 'student').model)
    assert type(atss.bbox_head).__name__ == 'ATSSIoUHead'
    ddod = MODELS.build(compose_config('ddod', 'r50', 'mini', 'student').model)
    assert type(ddod.bbox_head.cls_convs[0].conv).__name__ == 'SmallInputDeformConv2dPack'
    assert type(ddod.bbox_head.reg_convs[0].conv).__name__ == 'SmallInputDeformConv2dPack'
    mbv2 = MODELS.build(compose_config('fcos', 'mbv2', 'mini', 'student').model)
    feats = mbv2.backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [32, 96, 1280]
    assert [64 // f.shape[-1] for f in feats] == [8, 16, 32]  # strides 8/16/32 feed P3-P5
    outs = mbv2.neck(feats)
    assert len(outs) == 5 and all(o.shape[1] == 256 for o in outs)
    r101 = compose_config('gfl', 'r101', 'mini', 'teacher').model
    assert r101.backbone.depth == 101 and r101.neck.num_outs == 5 and r101.neck.add_extra_convs == 'on_output'
    aa = compose_config('autoassign', 'r50', 'mini', 'student').model
    assert aa.neck.add_extra_convs is True and aa.neck.relu_before_extra_convs


def _strip_profile_keys(model: dict) -> dict:
    model = copy.deepcopy(model)
    for key in PROFILE_BACKBONE_KEYS:
        model['backbone'].pop(key, None)
    model['bbox_head'].pop('num_classes')  # set by the data (6 synthetic shapes vs 80 COCO classes)
    return model


@pytest.mark.parametrize('detector,backbone', ALL)
def test_profiles_change_only_init_and_bn(detector, backbone):
    # beyond init / BN, the paper profile's architecture differs only by its recipe's named switches
    same_net = {'recipe_switches.ddod_assigner': 'atss', 'recipe_switches.teacher_backbone_style': 'pytorch'}
    for role in ('student', 'teacher'):
        mini = compose_config(detector, backbone, 'mini', role).model.to_dict()
        paper = compose_config(detector, backbone, 'paper', role, overrides=same_net).model.to_dict()
        assert _strip_profile_keys(mini) == _strip_profile_keys(paper)
        assert paper['bbox_head']['num_classes'] == 80 and mini['bbox_head']['num_classes'] == 6


def test_paper_profile_values():
    s = compose_config('atss', 'r50', 'paper', 'student')
    t = compose_config('atss', 'r101', 'paper', 'teacher')
    for cfg in (s, t):
        assert cfg.train_dataloader.batch_size == 4
        assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=32)
        opt = cfg.optim_wrapper
        assert opt.optimizer == dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
        warm = cfg.param_scheduler[0]
        assert (warm.type, warm.start_factor, warm.end, warm.by_epoch) == ('LinearLR', 0.001, 500, False)
        bb = cfg.model.backbone
        assert bb.norm_eval is True and bb.frozen_stages == 1 and bb.norm_cfg.requires_grad is False
        assert 'coco' in cfg.train_dataloader.dataset.data_root
        assert cfg.test_dataloader.dataset.pipeline[1] == dict(type='Resize', scale=(1333, 800), keep_ratio=True)
        assert cfg.val_evaluator.type == 'CocoMetric' and cfg.val_evaluator.metric == 'bbox'
    assert s.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=12)
    assert s.param_scheduler[1].milestones == [8, 11] and s.param_scheduler[1].end == 12
    assert s.train_dataloader.dataset.pipeline[2] == dict(type='Resize', scale=(1333, 800), keep_ratio=True)
    assert s.model.backbone.init_cfg == dict(type='Pretrained',
                                             checkpoint='https://download.pytorch.org/models/resnet50-0676ba61.pth')
    assert s.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert t.optim_wrapper.clip_grad is None   # the official 3x teachers train without clipping
    assert (s.optim_wrapper.type, t.optim_wrapper.type) == ('AmpOptimWrapper', 'AmpOptimWrapper')   # ATSS: fp16
    assert t.train_cfg.max_epochs == 36
    assert t.param_scheduler[1].milestones == [24, 33] and t.param_scheduler[1].end == 36
    assert t.train_dataloader.dataset.pipeline[2] == dict(type='RandomResize', scale=[(1333, 480), (1333, 960)],
                                                          keep_ratio=True)
    assert t.model.backbone.init_cfg.checkpoint == 'https://download.pytorch.org/models/resnet101-63fe2227.pth'
    mb = compose_config('fcos', 'mbv2', 'paper', 'student').model.backbone
    assert mb.init_cfg == dict(type='Pretrained', checkpoint='https://download.openmmlab.com/pretrain/third_party/'
                                                             'mobilenet_v2_batch256_imagenet-ff34753d.pth')
    # official MobileNetV2: BN affine frozen, running statistics updated
    assert mb.norm_eval is False and mb.norm_cfg.requires_grad is False


def test_paper_dataset_roots_from_env(monkeypatch):
    monkeypatch.setenv('PGD_COCO_ROOT', 'somewhere/coco')
    monkeypatch.setenv('PGD_CROWDHUMAN_ROOT', 'elsewhere/ch')
    coco = compose_config('ddod', 'r50', 'paper', 'student')
    assert coco.train_dataloader.dataset.data_root == 'somewhere/coco/'
    assert coco.val_evaluator.ann_file == 'somewhere/coco/annotations/instances_val2017.json'
    ch = compose_config('ddod', 'r101', 'paper', 'teacher', dataset='crowdhuman')
    assert ch.train_dataloader.dataset.type == 'ValidatedCrowdHumanDataset'
    assert ch.val_evaluator.type == 'CrowdHumanMetric' and ch.val_evaluator.ann_file == 'elsewhere/ch/annotation_val.odgt'
    assert ch.model.bbox_head.num_classes == 1
    assert ch.train_dataloader.dataset.pipeline[2].scale == [(1400, 480), (1400, 960)]


def test_mini_profile_values():
    s = compose_config('atss', 'r50', 'mini', 'student')
    t = compose_config('atss', 'r101', 'mini', 'teacher')
    assert s.train_dataloader.dataset.data_root == 'results/data/synth_coco/'
    assert s.train_dataloader.dataset.type == 'ValidatedCocoDataset'
    assert s.train_cfg.type == 'IterBasedTrainLoop' and t.train_cfg.type == 'IterBasedTrainLoop'
    assert t.train_cfg.max_iters > s.train_cfg.max_iters  # teachers train longer (budget-set, see mini.py)
    assert s.optim_wrapper.optimizer.type == 'AdamW' and s.optim_wrapper.clip_grad.max_norm == 35
    assert s.optim_wrapper.optimizer.fused is True  # one fused update kernel, not a Python loop over tensors
    # resume points: 4 per teacher run, 2 per student run (mini.py), two kept
    assert t.default_hooks.checkpoint.interval == t.train_cfg.max_iters // 4
    assert s.default_hooks.checkpoint.interval == s.train_cfg.max_iters // 2
    assert s.default_hooks.checkpoint.max_keep_ckpts == 2
    # the pretraining recipe the teachers' AP was measured with (mini.py: lr 5e-3 with a 200-iteration warm-up
    # gave ATSS R101 32.2 AP where lr 2e-3 gave 22.7)
    from pgd.pretrain import pretrain_settings
    recipe = pretrain_settings('mini')
    assert (recipe['lr'], recipe['warmup_iters'], recipe['iters']) == (0.005, 200, 1500)
    assert recipe['warmup_iters'] < recipe['iters']
    assert recipe['person_class'] is True  # the crowd set's person is a pretraining class (synth_shapes)
    for cfg, backbone in ((s, 'r50'), (t, 'r101')):
        # pretrained by `pgd pretrain` (tests/conftest.py points $PGD_PRETRAINED_DIR at stand-ins), BN frozen as in
        # the paper profile
        assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                                   checkpoint=f"{os.environ['PGD_PRETRAINED_DIR']}/{backbone}.pth")
        assert cfg.model.backbone.norm_eval is True and cfg.model.backbone.norm_cfg.requires_grad is False
        sched = cfg.param_scheduler[1]
        assert sched.by_epoch is False and sched.end == cfg.train_cfg.max_iters
        assert sched.milestones == [cfg.train_cfg.max_iters * 8 // 12, cfg.train_cfg.max_iters * 11 // 12]
        assert cfg.default_hooks.checkpoint.by_epoch is False
        assert cfg.log_processor.by_epoch is False
    assert t.train_dataloader.dataset.pipeline[2].type == 'RandomResize'
    # both ResNets freeze the stem + stages 1-3 (mini.py); the paper's 3:1 teacher:student schedule ratio
    assert s.model.backbone.frozen_stages == 3 and t.model.backbone.frozen_stages == 3
    assert t.train_cfg.max_iters == 4050 and t.param_scheduler[1].milestones == [2700, 3712]
    assert s.train_cfg.max_iters == 1350 and s.param_scheduler[1].milestones == [900, 1237]
    from mmdet.registry import MODELS
    teacher_backbone = MODELS.build(t.model.backbone)
    trainable = {name.split('.')[0] for name, w in teacher_backbone.named_parameters() if w.requires_grad}
    assert trainable == {'layer4'}
    assert s.train_dataloader.dataset.pipeline[2].type == 'Resize'
    crowd = compose_config('ddod', 'r50', 'mini', 'student', dataset='crowdhuman')
    assert crowd.train_dataloader.dataset.data_root == 'results/data/synth_crowd/'
    assert crowd.test_evaluator.type == 'CrowdHumanMetric'


def test_overrides_seed_and_work_dir(tmp_path):
    cfg = compose_config('fcos', 'r50', 'mini', 'student', seed=7, work_dir=tmp_path,
                         overrides={'train_cfg.max_iters': 20, 'train_dataloader.batch_size': 2,
                                    'train_dataloader.dataset.pipeline.2.scale': (64, 64),
                                    'data_root': 'elsewhere/synth/'})
    assert cfg.train_cfg.max_iters == 20 and cfg.train_dataloader.batch_size == 2
    assert cfg.train_dataloader.dataset.pipeline[2].scale == (64, 64)
    assert cfg.randomness.seed == 7 and cfg.work_dir == str(tmp_path)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.data_root == 'elsewhere/synth/'
    assert cfg.val_evaluator.ann_file == 'elsewhere/synth/annotations/instances_val.json'
    assert cfg.pgd == dict(detector='fcos', backbone='r50', profile='mini', role='student', dataset='coco',
                           method=None, method_overrides={})
    # the composed config survives a dump / reload (the run directory's config.py)
    cfg.dump(str(tmp_path / 'config.py'))
    from mmengine.config import Config
    again = Config.fromfile(str(tmp_path / 'config.py'))
    assert again.model == cfg.model and again.train_cfg == cfg.train_cfg


@pytest.mark.parametrize('kwargs,match', [
    (dict(detector='retina'), "unknown detector 'retina'"),
    (dict(backbone='r18'), "unknown backbone 'r18'"),
    (dict(profile='huge'), "unknown profile 'huge'"),
    (dict(role='assistant'), "unknown role 'assistant'"),
    (dict(dataset='voc'), "unknown dataset 'voc'"),
    (dict(method='nosuch', teacher='t'), "unknown method 'nosuch'"),
    (dict(method='pgd'), 'needs a teacher'),
    (dict(method_overrides={'k': 3}), 'without a method'),
])
def test_clear_errors(kwargs, match):
    args = dict(detector='atss', backbone='r50', profile='mini', role='student')
    args.update(kwargs)
    with pytest.raises(ConfigCompositionError, match=match):
        compose_config(**args)


def _config_copy(tmp_path: Path) -> Path:
    root = tmp_path / 'configs'
    shutil.copytree(config_root(), root, ignore=shutil.ignore_patterns('__pycache__', 'distill'))
    (root / 'distill').mkdir()
    (root / 'distill' / 'toykd.py').write_text(
        "distill = dict(init_student=True, teacher_guided_assign=False,\n"
        "               kd_losses=[dict(type='SomeKDLoss', alpha=1.0, k=30)])\n"
        "detector_overrides = dict(atss=dict(alpha=0.08), atss_mbv2=dict(alpha=0.04),\n"
        "                          ddod_crowdhuman=dict(alpha=0.001))\n")
    return root


def test_method_wraps_student_in_distiller(tmp_path, monkeypatch):
    monkeypatch.setenv('PGD_CONFIG_ROOT', str(_config_copy(tmp_path)))
    run = tmp_path / 'runs' / 'atss_r101_teacher'
    cfg = compose_config('atss', 'mbv2', 'mini', 'student', method='toykd', teacher=run,
                         method_overrides={'k': 15, 'init_student': False})
    m = cfg.model
    assert m.type == 'DistillDetector'
    assert m.teacher == dict(config=str(run / 'config.py'), checkpoint=str(run / 'model.pth'))
    assert m.student == compose_config('atss', 'mbv2', 'mini', 'student').model
    # detector, then detector_backbone, then the row's overrides; distiller keys go to the distiller
    assert m.kd_losses == [dict(type='SomeKDLoss', alpha=0.04, k=15)]
    assert m.init_student is False and m.teacher_guided_assign is False
    explicit = compose_config('ddod', 'r50', 'mini', 'student', dataset='crowdhuman', method='toykd',
                              teacher=dict(config='a/config.py', checkpoint='a/model.pth'))
    assert explicit.model.kd_losses[0].alpha == 0.001
    assert explicit.model.teacher == dict(config='a/config.py', checkpoint='a/model.pth')
    assert explicit.pgd.method == 'toykd'
    with pytest.raises(ConfigCompositionError, match='config and checkpoint'):
        compose_config('atss', 'r50', 'mini', 'student', method='toykd', teacher=dict(config='x.py'))


def test_test_batch_size_mini_only_and_checked(tmp_path, monkeypatch):
    # mini evaluates 4 images at a time (same metrics on its one-size synthetic images); the paper profile keeps
    # mmdet's batch 1, since real images of mixed sizes would be padded to the batch's largest
    for dataset in ('coco', 'crowdhuman'):
        mini = compose_config('atss', 'r50', 'mini', 'student', dataset=dataset)
        assert mini.val_dataloader.batch_size == 4 and mini.test_dataloader.batch_size == 4
        assert mini.train_dataloader.batch_size == 4
    paper = compose_config('atss', 'r50', 'paper', 'student')
    assert paper.val_dataloader.batch_size == 1 and paper.test_dataloader.batch_size == 1
    root = _config_copy(tmp_path)
    text = (root / 'profiles' / 'mini.py').read_text()
    (root / 'profiles' / 'zero.py').write_text(text + '\ntest_batch_size = 0\n')
    monkeypatch.setenv('PGD_CONFIG_ROOT', str(root))
    with pytest.raises(ConfigCompositionError, match='test_batch_size must be a positive int, got 0'):
        compose_config('atss', 'r50', 'zero', 'student')


def test_profile_typos_are_rejected(tmp_path, monkeypatch):
    root = _config_copy(tmp_path)
    text = (root / 'profiles' / 'mini.py').read_text()
    (root / 'profiles' / 'typo.py').write_text(text + '\ntrain_batchsize = 8\n')
    (root / 'profiles' / 'arch.py').write_text(text + "\nbackbone = dict(r50=dict(depth=18))\n")
    monkeypatch.setenv('PGD_CONFIG_ROOT', str(root))
    with pytest.raises(ConfigCompositionError, match='train_batchsize'):
        compose_config('atss', 'r50', 'typo', 'student')
    with pytest.raises(ConfigCompositionError, match='depth'):
        compose_config('atss', 'r50', 'arch', 'student')


def test_mini_teacher_iters_from_environment(monkeypatch):
    """$PGD_MINI_TEACHER_ITERS (the workflow's teacher_iters) sets the teachers' length; the schedule keeps its
    shape (x0.1 at 8/12 and 11/12, a checkpoint every quarter) and students keep theirs. Bad values are named."""
    assert compose_config('atss', 'r101', 'mini', 'teacher').train_cfg.max_iters == 4050
    monkeypatch.setenv('PGD_MINI_TEACHER_ITERS', '1200')
    t = compose_config('atss', 'r101', 'mini', 'teacher')
    assert t.train_cfg.max_iters == 1200 and t.param_scheduler[1].milestones == [800, 1100]
    assert t.param_scheduler[1].end == 1200 and t.default_hooks.checkpoint.interval == 300
    assert compose_config('atss', 'r50', 'mini', 'student').train_cfg.max_iters == 1350
    for bad in ('12OO', '-5', '0'):
        monkeypatch.setenv('PGD_MINI_TEACHER_ITERS', bad)
        with pytest.raises(ConfigCompositionError, match='PGD_MINI_TEACHER_ITERS .* positive integer'):
            compose_config('atss', 'r101', 'mini', 'teacher')
    monkeypatch.setenv('PGD_MINI_TEACHER_ITERS', '')  # set but empty: mmengine's own refusal, file named
    with pytest.raises(ConfigCompositionError, match='mini.py.*PGD_MINI_TEACHER_ITERS'):
        compose_config('atss', 'r101', 'mini', 'teacher')


def test_mini_profile_freezes_ddod_offsets_only():
    """Mini: DCN offset convs get lr 0 (they stay at their zero init, so DCN = plain conv); everything else keeps
    the base lr. Paper: the offsets learn at the base lr."""
    from mmengine.optim import build_optim_wrapper

    init_default_scope('mmdet')
    for profile, offset_lr in (('mini', 0.0), ('paper', None)):
        cfg = compose_config('ddod', 'r50', profile, 'student')
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        base = wrapper.optimizer.defaults['lr']
        names = {id(p): n for n, p in model.named_parameters()}
        lrs = {names[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
        offsets = {n: lr for n, lr in lrs.items() if 'conv_offset' in n}
        assert len(offsets) == 4  # weight + bias of the cls and reg towers' first conv
        assert all(lr == (base if offset_lr is None else offset_lr) for lr in offsets.values())
        assert all(lr == base for n, lr in lrs.items() if 'conv_offset' not in n and 'backbone' in n)


def test_student_init_protocol_of_the_profiles():
    """mini: every KD method starts from the teacher's neck and head (student_init='teacher'); a row's
    method_overrides still win; the control keeps its inheriting; the paper profile keeps each method's own."""
    mini = {m: compose_config('atss', 'r50', 'mini', 'student', method=m, teacher='/t').model.init_student
            for m in ('defeat', 'frs', 'fgfi', 'fkd', 'fgd', 'pgd', 'inherit')}
    assert all(mini.values())
    assert compose_config('atss', 'r50', 'mini', 'student', method='fkd', teacher='/t',
                          method_overrides={'init_student': False}).model.init_student is False
    paper = {m: compose_config('atss', 'r50', 'paper', 'student', method=m, teacher='/t').model.init_student
             for m in ('defeat', 'fkd', 'fgd', 'pgd', 'inherit')}
    assert paper == dict(defeat=False, fkd=False, fgd=True, pgd=True, inherit=True)
    control = compose_config('ddod', 'r50', 'mini', 'student', method='inherit', teacher='/t').model
    assert control.kd_losses == [] and control.teacher_guided_assign is False


def test_student_init_and_control_errors():
    from pgd.config import check_student_init

    with pytest.raises(ConfigCompositionError, match="student_init 'teachr' is not one of.*did you mean 'teacher'"):
        check_student_init('mini', 'teachr')
    assert check_student_init('mini', None) == 'method'
