"""DistillDetector: one distillation step per detector, teacher isolation, hooks, init_student, saved student,
teacher from a config + checkpoint, DDOD teacher-guided assignment."""
from __future__ import annotations

import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import pgd.losses  # noqa: F401
import pgd.models  # noqa: F401
from pgd.checkpoint import load_checkpoint, save_checkpoint
from pgd.losses.base import ConfigError
from pgd.models.distiller import DistillDetector

from tiny_detectors import DETECTORS, FEAT, no_global_random_draws, tiny_batch, tiny_detector_cfg

register_all_modules()
torch.set_num_threads(1)

SHAPES = ((3, 96, 96), (3, 80, 64))
LEVEL_SIZES = [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]   # 96 px batch, strides 8 .. 128


def distiller_cfg(detector, kd=True, **kw):
    cfg = dict(type='DistillDetector', student=tiny_detector_cfg(detector, width=8),
               teacher_model=tiny_detector_cfg(detector, width=16),
               kd_losses=[dict(type='PGDLoss', k=9)] if kd else [])
    cfg.update(kw)
    return cfg


def build(detector, seed=0, **kw):
    torch.manual_seed(seed)
    model = MODELS.build(distiller_cfg(detector, **kw))
    model.init_weights()
    model.train()
    return model


@pytest.fixture(scope='module', params=DETECTORS)
def stepped(request):
    """One SGD step of a freshly built distiller; returns what the tests below inspect."""
    detector = request.param
    model = build(detector, teacher_guided_assign='auto')
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)))
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    with no_global_random_draws():
        losses = model.loss(inputs, samples)
        total, log_vars = model.parse_losses(losses)
        optim.update_params(total)
    return dict(detector=detector, model=model, losses=losses, log_vars=log_vars, optim=optim,
                teacher_before=teacher_before, student_before=student_before)


def test_step_losses_finite_and_kd_present(stepped):
    losses = stepped['losses']
    kd = [k for k in losses if k.startswith('loss_pgd_')]
    assert sorted(kd) == ['loss_pgd_cls_att', 'loss_pgd_cls_fea', 'loss_pgd_reg_att', 'loss_pgd_reg_fea']
    for key, value in stepped['log_vars'].items():
        assert torch.isfinite(torch.as_tensor(value)), key
    assert all(losses[k] > 0 for k in kd)   # random teacher and student: the features differ


def test_teacher_isolated_and_unchanged(stepped):
    model = stepped['model']
    teacher_params = {id(p) for p in model.teacher.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    for group in stepped['optim'].optimizer.param_groups:
        assert not teacher_params & {id(p) for p in group['params']}
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not any(k.startswith('teacher') for k in model.state_dict())
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, stepped['teacher_before'][key]), key   # BN running stats included
    changed = [k for k, v in model.student.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, stepped['student_before'][k])]
    assert any(k.startswith('backbone.') for k in changed) and any(k.startswith('bbox_head.') for k in changed)
    model.train()
    assert not model.teacher.training and model.student.training
    assert all(not m.training for m in model.teacher.modules())


@pytest.mark.parametrize('detector', ['gfl', 'fcos'])
def test_official_code_preset_step(detector):
    """preset='code' (bugs B1-B3, mean spatial attention, noise regulariser...) runs, and GFL's adapter takes the
    official per-image stride (B2) from the loss."""
    model = build(detector, kd_losses=[dict(type='PGDLoss', preset='code', seed=1)])
    assert model.adapter.gfl_decode_stride_bug == (detector == 'gfl')
    assert model.kd_losses[0].settings.swap_xy_anchor_free == (detector == 'fcos')
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    with no_global_random_draws():      # the noise comes from the loss's own seeded generator
        losses = model.loss(inputs, samples)
    kd = {k: v for k, v in losses.items() if k.startswith('loss_pgd_')}
    assert len(kd) == 4 and all(torch.isfinite(v) for v in kd.values())
    again = model.loss(inputs, samples)   # same seed and iteration: the PGW position noise is reproducible
    for key, value in kd.items():
        torch.testing.assert_close(again[key], value)


def test_kd_gradient_reaches_student_only():
    model = build('fcos')
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    losses = model.loss(inputs, samples)
    kd_total = sum(v for k, v in losses.items() if k.startswith('loss_pgd_'))
    kd_total.backward()
    # through the hooked tower convs into the student's FPN and backbone; the head's predictors get nothing
    head = model.student.bbox_head
    assert head.cls_convs[0].conv.weight.grad.abs().sum() > 0
    assert head.reg_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.conv1.weight.grad.abs().sum() > 0
    assert head.conv_cls.weight.grad is None or head.conv_cls.weight.grad.abs().sum() == 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_kd_loss_pulls_student_features_to_teacher():
    """Optimising the PGD terms alone for a few steps on one batch shrinks them: the gradients point the student's
    features towards the teacher's."""
    model = build('atss', kd_losses=[dict(type='PGDLoss', k=9, alpha=1.0, delta=0.1)])
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    optim = torch.optim.Adam(model.student.parameters(), lr=1e-3)
    history = []
    for _ in range(15):
        losses = model.loss(inputs, samples)
        kd = sum(v for k, v in losses.items() if k.startswith('loss_pgd_'))
        history.append(kd.item())
        optim.zero_grad()
        kd.backward()
        optim.step()
    assert history[-1] < 0.5 * history[0], history


def test_hooks_collect_levels_in_order():
    model = build('gfl')
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    with torch.no_grad():
        for feats, net in ((model._forward_teacher(inputs), model.teacher),
                           (model._forward_student(inputs), model.student)):
            # cleared after each pass, and disarmed: calling the head outside a pass records nothing
            assert not model._teacher_taps.outputs['cls_feat'] and not model._student_taps.outputs['reg_feat']
            assert len(feats.neck) == len(feats.cls_feat) == len(feats.reg_feat) == 5
            for lvl, (h, w) in enumerate(LEVEL_SIZES):
                assert feats.neck[lvl].shape == (2, FEAT, h, w)
                assert feats.cls_feat[lvl].shape == (2, FEAT, h, w)
                # the hooked tensor is the first tower conv applied to that level's FPN output
                torch.testing.assert_close(feats.cls_feat[lvl], net.bbox_head.cls_convs[0](feats.neck[lvl]))
                torch.testing.assert_close(feats.reg_feat[lvl], net.bbox_head.reg_convs[0](feats.neck[lvl]))
    # prediction / validation passes do not accumulate features in the hooks
    model.eval()
    with torch.no_grad():
        model.predict(inputs, samples)
        model.teacher.predict(inputs, samples)
    assert not model._student_taps.outputs['cls_feat'] and not model._teacher_taps.outputs['reg_feat']
    model.train()
    assert len(model._forward_student(inputs).cls_feat) == 5


def test_init_student_copies_exactly_the_matching_tensors():
    model = build('atss', kd=False)
    copied, skipped = model.init_student_report
    t_state, s_state = model.teacher.state_dict(), model.student.state_dict()
    expect = {k for k, v in t_state.items()
              if k.startswith(('neck.', 'bbox_head.')) and k in s_state and s_state[k].shape == v.shape}
    assert set(copied) == expect
    assert set(skipped) == {k for k in t_state if k.startswith('neck.lateral_convs.') and k.endswith('weight')}
    for k in copied:
        assert torch.equal(s_state[k], t_state[k]), k
    # backbones differ in width: nothing is copied there
    assert not any(k.startswith('backbone.') for k in copied)
    # without init_student the head starts from its own initialisation
    plain = build('atss', kd=False, init_student=False)
    assert not torch.equal(plain.student.state_dict()['bbox_head.atss_cls.weight'],
                           plain.teacher.state_dict()['bbox_head.atss_cls.weight'])


def test_self_distillation_copies_everything_of_neck_and_head():
    torch.manual_seed(0)
    cfg = distiller_cfg('fcos')
    cfg['teacher_model'] = copy.deepcopy(cfg['student'])   # R50 -> R50 in the paper's self-distillation
    model = MODELS.build(cfg)
    model.init_weights()
    copied, skipped = model.init_student_report
    assert skipped == [] and len(copied) == sum(
        k.startswith(('neck.', 'bbox_head.')) for k in model.student.state_dict())
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    losses = model.loss(inputs, samples)
    assert torch.isfinite(sum(v for k, v in losses.items() if k.startswith('loss_pgd')))


def test_saved_student_loads_strict_into_plain_detector(tmp_path):
    model = build('ddod', teacher_guided_assign=True)
    path = save_checkpoint(dict(state_dict=model.student_state_dict(), meta=dict(note='test')),
                           tmp_path / 'model.pth')
    plain = MODELS.build(tiny_detector_cfg('ddod', width=8))
    plain.load_state_dict(load_checkpoint(path)['state_dict'], strict=True)
    plain.eval()
    model.eval()
    inputs, samples = tiny_batch(model, shapes=SHAPES, training=False)
    with torch.no_grad():
        ours = model.predict(inputs, copy.deepcopy(samples))
        theirs = plain.predict(inputs, copy.deepcopy(samples))
        torch.testing.assert_close(model._forward(inputs), plain._forward(inputs))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes)
        torch.testing.assert_close(a.pred_instances.scores, b.pred_instances.scores)


def test_teacher_from_config_and_checkpoint(tmp_path):
    torch.manual_seed(3)
    teacher_cfg = tiny_detector_cfg('fcos', width=16)
    trained = MODELS.build(teacher_cfg)
    trained.init_weights()
    Config(dict(model=teacher_cfg)).dump(tmp_path / 'config.py')
    save_checkpoint(dict(state_dict=trained.state_dict(), meta={}), tmp_path / 'model.pth')
    model = MODELS.build(dict(type='DistillDetector', student=tiny_detector_cfg('fcos', width=8),
                              teacher=dict(config=str(tmp_path / 'config.py'),
                                           checkpoint=str(tmp_path / 'model.pth')),
                              kd_losses=[dict(type='PGDLoss')]))
    model.init_weights()
    for key, value in trained.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[key], value), key
    # init_student used the loaded weights, and the Runner's init_weights did not undo the copy
    assert torch.equal(model.student.state_dict()['bbox_head.conv_cls.weight'], trained.state_dict()[
        'bbox_head.conv_cls.weight'])
    assert model.kd_losses[0].settings.alpha == pytest.approx(0.04)   # bound to FCOS
    with pytest.raises(FileNotFoundError, match='teacher config'):
        DistillDetector(student=tiny_detector_cfg('fcos'), teacher=dict(config=str(tmp_path / 'nope.py'),
                                                                         checkpoint=str(tmp_path / 'model.pth')))
    wrong = MODELS.build(tiny_detector_cfg('fcos', width=8))
    save_checkpoint(dict(state_dict=wrong.state_dict()), tmp_path / 'wrong.pth')
    with pytest.raises(ConfigError, match='does not match'):
        DistillDetector(student=tiny_detector_cfg('fcos'), teacher=dict(config=str(tmp_path / 'config.py'),
                                                                         checkpoint=str(tmp_path / 'wrong.pth')))


def test_ddod_teacher_guided_assignment_uses_teacher_predictions():
    model = build('ddod', kd=False, teacher_guided_assign=True)
    head = model.student.bbox_head
    inputs, samples = tiny_batch(model, shapes=SHAPES)
    seen = {}
    original = head.get_cls_targets

    def spy(anchor_list, valid_flag_list, num_level_anchors_list, cls_score_list, bbox_pred_list, *a, **k):
        seen['cls'] = [c.detach().clone() for c in cls_score_list]
        seen['bbox'] = [b.detach().clone() for b in bbox_pred_list]
        return original(anchor_list, valid_flag_list, num_level_anchors_list, cls_score_list, bbox_pred_list,
                        *a, **k)

    head.get_cls_targets = spy
    try:
        guided = model.loss(inputs, samples)
        with torch.no_grad():
            t_outs = model.teacher.bbox_head(model.teacher.extract_feat(inputs))
            s_outs = head(model.student.extract_feat(inputs))
        # what the assigner saw, per image: the teacher's scores / deltas of all levels, not the student's
        for n in range(2):
            t_cls = torch.cat([c[n].permute(1, 2, 0).reshape(-1, c.shape[1]) for c in t_outs[0]])
            s_cls = torch.cat([c[n].permute(1, 2, 0).reshape(-1, c.shape[1]) for c in s_outs[0]])
            t_box = torch.cat([b[n].permute(1, 2, 0).reshape(-1, 4) for b in t_outs[1]])
            torch.testing.assert_close(seen['cls'][n], t_cls)
            torch.testing.assert_close(seen['bbox'][n], t_box)
            assert not torch.allclose(seen['cls'][n], s_cls)
        model.teacher_guided_assign = False
        own = model.loss(inputs, samples)
        for n in range(2):
            s_cls = torch.cat([c[n].permute(1, 2, 0).reshape(-1, c.shape[1]) for c in s_outs[0]])
            torch.testing.assert_close(seen['cls'][n], s_cls)
    finally:
        del head.get_cls_targets
    assert 'process_predictions_and_anchors' not in vars(head)   # the patch is gone after the step
    # different assignments -> different detection losses for the same student outputs
    g = sum(sum(v) if isinstance(v, list) else v for v in guided.values())
    o = sum(sum(v) if isinstance(v, list) else v for v in own.values())
    assert not torch.isclose(g, o)


def test_device_and_dtype_moves_reach_the_teacher():
    model = build('fcos', kd=False)
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64
    model.float()
    assert next(model.teacher.parameters()).dtype == torch.float32


def test_config_errors():
    with pytest.raises(ConfigError, match='exactly one'):
        DistillDetector(student=tiny_detector_cfg('fcos'))
    with pytest.raises(ConfigError, match='teacher is gfl'):
        DistillDetector(student=tiny_detector_cfg('fcos'), teacher_model=tiny_detector_cfg('gfl'))
    with pytest.raises(ConfigError, match='DDOD-only'):
        DistillDetector(student=tiny_detector_cfg('atss'), teacher_model=tiny_detector_cfg('atss'),
                        teacher_guided_assign=True)
    with pytest.raises(ConfigError, match='missing'):
        DistillDetector(student=tiny_detector_cfg('fcos'), teacher=dict(config='x.py'))
    assert DistillDetector(student=tiny_detector_cfg('ddod'), teacher_model=tiny_detector_cfg('ddod'),
                           teacher_guided_assign='auto').teacher_guided_assign is True
    assert DistillDetector(student=tiny_detector_cfg('gfl'), teacher_model=tiny_detector_cfg('gfl'),
                           teacher_guided_assign='auto').teacher_guided_assign is False


def test_real_architectures_r101_teacher_mbv2_student():
    """configs/detectors' ATSS R101 teacher and MobileNetV2 student (Table 2): init_student skips exactly the FPN
    lateral convs (their input widths differ), and a distillation step runs on the real networks."""
    from pgd.config import compose_config

    teacher = compose_config('atss', 'r101', 'mini', 'teacher').model.to_dict()
    cfg = compose_config('atss', 'mbv2', 'mini', 'student', method='pgd', teacher=dict(teacher_model=teacher))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    copied, skipped = model.init_student_report
    assert sorted(skipped) == [f'neck.lateral_convs.{i}.conv.weight' for i in range(3)]
    assert 'neck.lateral_convs.0.conv.bias' in copied and 'bbox_head.atss_iou.weight' in copied
    assert type(model.student.bbox_head).__name__ == 'ATSSIoUHead'
    model.train()
    inputs, samples = tiny_batch(model, shapes=((3, 96, 128),), num_items=(2,))
    losses = model.loss(inputs, samples)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and losses['loss_pgd_cls_fea'] > 0
    total.backward()
    assert model.student.backbone.conv1.conv.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- through mmengine's Runner (pgd train / eval)
from train_helpers import tiny_atss, tiny_coco, tiny_config_text, tiny_run  # noqa: E402,F401  (fixtures)


def test_runner_distillation_from_a_trained_teacher_run(tiny_run, tiny_coco, tmp_path):
    """A teacher run written by `pgd train` feeds a PGD student run: teacher loaded from its config.py + model.pth,
    checkpoints without the teacher, resume, and a model.pth that is the plain student."""
    from pgd import eval as pgd_eval
    from pgd import train

    student = tiny_atss()
    student['backbone']['base_channels'] = 4   # narrower than the teacher: lateral convs are not copied
    student['neck']['in_channels'] = [8, 16, 32]
    distill = dict(type='DistillDetector', student=student,
                   teacher=dict(config=str(tiny_run / 'config.py'), checkpoint=str(tiny_run / 'model.pth')),
                   init_student=True, kd_losses=[dict(type='PGDLoss', k=9)])
    text = tiny_config_text(tiny_coco, max_iters=2, interval=2) + (
        f"\ncustom_imports = dict(imports=['pgd.models', 'pgd.losses'], allow_failed_imports=False)"
        f"\nmodel = {distill!r}\n")
    config = tmp_path / 'student_config.py'
    config.write_text(text)
    work = tmp_path / 'student'
    args = ['--config', str(config), '--work-dir', str(work), '--no-mlflow', '--threads', '1']
    assert train.main(args) == 0
    ckpt = load_checkpoint(work / 'iter_2.pth')
    assert ckpt['state_dict'] and not any(k.startswith('teacher') for k in ckpt['state_dict'])
    assert all(k.startswith(('student.', 'kd_losses.')) for k in ckpt['state_dict'])
    exported = load_checkpoint(work / 'model.pth')['state_dict']
    plain = MODELS.build(student)
    plain.load_state_dict(exported, strict=True)
    for key, value in ckpt['state_dict'].items():
        torch.testing.assert_close(exported[key[len('student.'):]], value)
    # resume to 4 iterations from iter_2.pth
    config.write_text(text.replace('max_iters=2', 'max_iters=4'))
    assert train.main(args + ['--resume']) == 0
    assert (work / 'iter_4.pth').is_file()
    assert pgd_eval.main(['--run-dir', str(work), '--no-mlflow', '--threads', '1']) == 0
    assert (work / 'metrics.json').is_file()


def test_taps_record_exactly_what_the_losses_read():
    """pgd.models.taps: the distiller hooks the union of its losses' taps; neck and head outputs are always there."""
    plain = build('atss', kd_losses=[dict(type='FGDLoss', in_channels=FEAT, num_levels=5)])
    assert plain.taps == {} and not plain._student_taps._handles       # FGD reads FPN outputs only: no hooks
    inputs, samples = tiny_batch(plain, shapes=SHAPES)
    feats = plain._forward_student(inputs)
    assert set(feats) == {'neck', 'head_outs'}
    with pytest.raises(AttributeError, match="no 'cls_feat' was recorded.*declare it as a tap"):
        feats.cls_feat
    neck_only = build('atss', kd_losses=[dict(type='PGDLoss', k=9, branches=['neck'])])
    assert neck_only.taps == {}
    assert set(build('atss').taps) == {'cls_feat', 'reg_feat'}
    # a config's taps replace the loss's: here the cls branch distils the *second* tower conv
    moved = build('atss', kd_losses=[dict(type='PGDLoss', k=9, branches=['cls'],
                                          taps=dict(cls_feat='bbox_head.cls_convs.1'))])
    with torch.no_grad():
        feats = moved._forward_student(inputs)
        head = moved.student.bbox_head
        first = [head.cls_convs[0](x) for x in feats.neck]
        torch.testing.assert_close(feats.cls_feat[2], head.cls_convs[1](first[2]))
    with pytest.raises(ConfigError, match="no module 'bbox_head.nothing' for tap 'cls_feat'"):
        build('atss', kd_losses=[dict(type='PGDLoss', k=9, taps=dict(cls_feat='bbox_head.nothing'))])
    with pytest.raises(ConfigError, match="tap 'neck' is built in"):
        build('atss', kd_losses=[dict(type='PGDLoss', k=9, taps=dict(neck='neck'))])
    # a module that runs once per pass (per_level=False): its single output
    from pgd.models.taps import TapRecorder, parse_taps

    recorder = TapRecorder(moved.student, parse_taps(dict(c5=dict(module='backbone', per_level=False)), 'test'),
                           'student')
    with torch.no_grad(), recorder.recording():
        out = moved.student.backbone(inputs)
    taken = recorder.take(5)['c5']
    assert len(taken) == len(out) and all(a is b for a, b in zip(taken, out))


def test_inherit_only_control_starts_from_the_teacher_and_has_no_kd_term():
    """The control row (configs/distill/inherit.py): before step 1 the student's neck and head are the teacher's
    tensors; its loss is the plain student's own, term for term, and the teacher never runs."""
    from mmengine.config import Config

    from pgd.vocab import config_root

    distill = Config.fromfile(str(config_root() / 'distill' / 'inherit.py')).distill.to_dict()
    assert distill == dict(init_student=True, teacher_guided_assign=False, kd_losses=[])
    for detector in ('atss', 'ddod'):
        model = build(detector, kd=False, init_student=True, teacher_guided_assign=False)
        t_state, s_state = model.teacher.state_dict(), model.student.state_dict()
        same = [k for k in s_state if k.startswith(('neck.', 'bbox_head.')) and k in t_state
                and s_state[k].shape == t_state[k].shape]
        assert same and all(torch.equal(s_state[k], t_state[k]) for k in same)
        assert not model.needs_teacher_pass
        calls = []
        model.teacher.extract_feat = lambda *a, **k: calls.append(1)   # would fail the step if called
        inputs, samples = tiny_batch(model, shapes=SHAPES)
        torch.manual_seed(1)
        losses = model.loss(inputs, samples)
        torch.manual_seed(1)
        own = model.student.loss(inputs, samples)
        assert calls == [] and set(losses) == set(own) and not any('kd' in k or 'pgd' in k for k in losses)
        for key in own:
            got, want = losses[key], own[key]
            for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
                assert torch.equal(g, w), key
