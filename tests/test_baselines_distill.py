"""Every (KD baseline, detector) pair of the paper through the real DistillDetector: two distillation iterations,
finite losses, the KD modules and the student receive gradients, the teacher does not and stays unchanged.

Fast: tiny detectors (tests/tiny_detectors.py) with the configs/distill/<method>.py losses.
Slow (-m slow): the composed mini-profile configs (R101 teacher, R50 / MobileNetV2 students, COCO / CrowdHuman).
"""
from __future__ import annotations

import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper

import pgd.losses  # noqa: F401
import pgd.models  # noqa: F401
from pgd.config import compose_config, config_root
from pgd.losses.base import ConfigError

from tiny_detectors import FEAT, no_global_random_draws, tiny_batch, tiny_detector_cfg

register_all_modules()
torch.set_num_threads(1)

DETECTORS = ('fcos', 'autoassign', 'atss', 'gfl', 'ddod')
KD_PREFIX = dict(fgd='loss_fgd_', defeat='loss_defeat_', frs='loss_frs_', fkd='loss_fkd_', fgfi='loss_fgfi',
                 ld='loss_ld')
# (method, detector, student backbone, dataset): Table 1, Table 2 (MobileNetV2 students), Table 3 (CrowdHuman)
PAPER_PAIRS = (
    [(m, d, 'r50', 'coco') for m in ('defeat', 'frs', 'fkd', 'fgd') for d in DETECTORS]
    + [('fgfi', 'atss', 'r50', 'coco'), ('fgfi', 'ddod', 'r50', 'coco'), ('ld', 'gfl', 'r50', 'coco')]
    + [('fgd', 'fcos', 'mbv2', 'coco'), ('fgd', 'atss', 'mbv2', 'coco')]
    + [(m, 'ddod', 'r50', 'crowdhuman') for m in ('fkd', 'defeat', 'frs', 'fgfi', 'fgd')]
)
# the fast suite runs them all on tiny detectors, plus FGFI's virtual anchors on both anchor-free detectors
FAST_PAIRS = PAPER_PAIRS + [('fgfi', 'fcos', 'r50', 'coco'), ('fgfi', 'autoassign', 'r50', 'coco')]


def tiny_mbv2_student(detector: str):
    """The tiny student with mmdet's MobileNetV2 (width x0.25) in place of the narrow ResNet-18 (Table 2)."""
    cfg = tiny_detector_cfg(detector, width=8)
    cfg.backbone = dict(type='MobileNetV2', widen_factor=0.25, out_indices=(2, 4, 7), frozen_stages=-1,
                        norm_cfg=dict(type='BN', requires_grad=True), act_cfg=dict(type='ReLU6'), norm_eval=False,
                        init_cfg=None)
    cfg.neck.in_channels = [8, 24, 1280]
    return cfg


def method_losses(method: str, detector: str, channels: int | None = None) -> tuple[list[dict], bool]:
    """configs/distill/<method>.py's KD losses with the detector's overrides applied (as compose_config does)."""
    cfg = Config.fromfile(str(config_root() / 'distill' / f'{method}.py'))
    losses = copy.deepcopy(cfg.distill.to_dict()['kd_losses'])
    for loss in losses:
        loss.update(dict((cfg.get('detector_overrides') or {}).get(detector) or {}))
        if channels is not None and 'in_channels' in loss:
            loss['in_channels'] = channels
    return losses, bool(cfg.distill.get('init_student', False))


def two_iterations(model, inputs, samples, method):
    """Iteration 0 is a full SGD step; iteration 1 back-propagates the KD losses alone and returns them."""
    hub = MessageHub.get_current_instance()     # the one the distiller reads; restored below
    saved = {k: hub.get_info(k) for k in ('iter', 'max_iters')}
    hub.update_info('max_iters', 2)      # the schedule-scaled warm-ups (FRS, FGFI) end before iteration 1
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=1e-3, momentum=0.9),
                                            clip_grad=dict(max_norm=35, norm_type=2)))
    try:
        with no_global_random_draws():
            hub.update_info('iter', 0)
            losses = model.loss(inputs, samples)
            total, log_vars = model.parse_losses(losses)
            assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values()), log_vars
            optim.update_params(total)
            hub.update_info('iter', 1)
            losses = model.loss(inputs, samples)
    finally:
        for k, v in saved.items():
            hub.update_info(k, v)
    kd = {k: v for k, v in losses.items() if k.startswith(KD_PREFIX[method])}
    assert kd, f'no {method} loss among {sorted(losses)}'
    assert all(torch.isfinite(v) for v in losses.values() if torch.is_tensor(v))
    kd_total = sum(kd.values())
    assert kd_total > 0
    kd_total.backward()
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f'teacher changed: {key}'
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    kd_params = dict(model.kd_losses.named_parameters())
    assert all(p.grad is not None for p in kd_params.values()), [k for k, p in kd_params.items() if p.grad is None]
    if kd_params:
        assert sum(p.grad.abs().sum() for p in kd_params.values()) > 0
    student_grad = sum(p.grad.abs().sum() for p in model.student.parameters() if p.grad is not None)
    assert student_grad > 0
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    return kd


@pytest.mark.parametrize('method,detector,backbone,dataset', FAST_PAIRS)
def test_tiny_distillation_pair(method, detector, backbone, dataset):
    torch.manual_seed(0)
    classes = 1 if dataset == 'crowdhuman' else None
    student = tiny_mbv2_student(detector) if backbone == 'mbv2' else tiny_detector_cfg(detector, width=8)
    teacher = tiny_detector_cfg(detector, width=16)
    if classes:
        student.bbox_head.num_classes = teacher.bbox_head.num_classes = classes
    kd_losses, init_student = method_losses(method, detector, channels=FEAT)
    model = MODELS.build(dict(type='DistillDetector', student=student, teacher_model=teacher,
                              kd_losses=kd_losses, init_student=init_student))
    model.init_weights()
    model.train()
    inputs, samples = tiny_batch(model, shapes=((3, 96, 96), (3, 80, 64)))
    if classes:
        for s in samples:
            s.gt_instances.labels = torch.zeros_like(s.gt_instances.labels)
    two_iterations(model, inputs, samples, method)


@pytest.mark.parametrize('detector', ['fcos', 'autoassign', 'atss', 'ddod'])
def test_ld_rejected_by_the_distiller_on_non_gfl(detector):
    kd_losses, _ = method_losses('ld', detector)
    with pytest.raises(ConfigError, match='only GFL has'):
        MODELS.build(dict(type='DistillDetector', student=tiny_detector_cfg(detector, width=8),
                          teacher_model=tiny_detector_cfg(detector, width=8), kd_losses=kd_losses,
                          init_student=False))


@pytest.mark.slow
@pytest.mark.parametrize('method,detector,backbone,dataset', PAPER_PAIRS)
def test_paper_pair_with_composed_config(method, detector, backbone, dataset):
    torch.manual_seed(0)
    teacher = compose_config(detector, 'r101', 'mini', 'teacher', dataset=dataset).model
    cfg = compose_config(detector, backbone, 'mini', 'student', dataset=dataset, method=method,
                         teacher=dict(teacher_model=teacher.to_dict()))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    classes = model.student.bbox_head.num_classes
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 128, 128), (3, 96, 128)], num_items=[3, 2],
                            num_classes=max(classes, 2))     # mmdet's demo needs >= 2 classes
    data = model.data_preprocessor(packed, True)
    for s in data['data_samples']:
        s.gt_instances.labels = s.gt_instances.labels.clamp(max=classes - 1)
    two_iterations(model, data['inputs'], data['data_samples'], method)


@pytest.mark.parametrize('detector', DETECTORS)
def test_fgfi_anchors_are_the_detectors_own(detector):
    """ATSS/GFL/DDOD: FGFI's 8 s squares on the teacher's prior centres are exactly the heads' anchors; FCOS and
    AutoAssign: virtual 8 s squares centred on their points."""
    from pgd.losses.baseline_masks import square_anchors
    from pgd.models.adapters import build_adapter
    torch.manual_seed(0)
    model = MODELS.build(tiny_detector_cfg(detector, width=8))
    model.eval()
    inputs, samples = tiny_batch(model, shapes=((3, 96, 96), (3, 80, 64)))
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(inputs))
    dp = build_adapter(model).dense_predictions(outs, [s.metainfo for s in samples])
    strides = torch.as_tensor(dp.strides, dtype=torch.float32)[dp.level]
    mine = square_anchors(dp.points, strides, base_scale=8.0)[:, 0]
    head = model.bbox_head
    if detector in ('atss', 'gfl', 'ddod'):
        own = torch.cat(head.prior_generator.grid_priors(dp.level_sizes, device='cpu'))
        torch.testing.assert_close(mine, own)
    else:
        side = 8 * strides
        torch.testing.assert_close(mine[:, 2] - mine[:, 0], side)
        torch.testing.assert_close((mine[:, :2] + mine[:, 2:]) / 2, dp.points.float())
