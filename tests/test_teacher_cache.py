"""The teacher-output cache (pgd.models.teacher_cache): a step that reads the teacher from the cache gives the
losses of a step that runs the teacher, and a cache that does not fit the run is refused with the reason."""
from __future__ import annotations

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import pgd.losses  # noqa: F401
import pgd.models  # noqa: F401
from pgd.models.feature_autocast import FeatureAutocastHook
from pgd.models.teacher_cache import TeacherCache, TeacherCacheError, build_cache

from tiny_detectors import tiny_batch, tiny_detector_cfg

register_all_modules()
torch.set_num_threads(1)

SHAPES = ((3, 96, 96),) * 4


def distiller(detector, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(dict(type='DistillDetector', student=tiny_detector_cfg(detector, width=8),
                              teacher_model=tiny_detector_cfg(detector, width=16),
                              kd_losses=[dict(type='PGDLoss', k=9, detector=detector)],
                              teacher_guided_assign='auto'))
    model.init_weights()
    model.train()
    return model


def batch(model):
    inputs, samples = tiny_batch(model, shapes=SHAPES, num_items=(3, 2, 4, 1))
    for i, s in enumerate(samples):
        s.set_metainfo(dict(img_id=100 + i, flip=bool(i % 2)))
    return inputs, samples


def cache_of(model, inputs, samples, checkpoint, autocast=None):
    """A cache built two images at a time (the step below runs four), so the comparison also covers batch
    composition. (Not one at a time: the tiny heads' GroupNorm has one value per group on a 1x1 level.)"""
    pairs = [(inputs[i:i + 2], samples[i:i + 2]) for i in range(0, len(samples), 2)]
    return TeacherCache(build_cache(model, pairs, 'sig', checkpoint, autocast), 'cache')


def cached_setup(tmp_path, detector='atss', autocast=None, relabel=None):
    """A distiller, a four-image batch (``relabel``: metainfo per sample index) and its cache; ``ckpt`` stands for
    the teacher checkpoint the cache was computed from."""
    model = distiller(detector)
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'x')
    inputs, samples = batch(model)
    for i, s in enumerate(samples if relabel else []):
        s.set_metainfo(relabel(i))
    return model, ckpt, inputs, samples, cache_of(model, inputs, samples, ckpt, autocast)


def assert_losses_close(live, cached, rtol, atol):
    live, cached = flat(live), flat(cached)
    assert set(live) == set(cached)
    for k in live:
        assert torch.allclose(live[k], cached[k], rtol=rtol, atol=atol), (k, live[k], cached[k])
    return live


def live_and_cached(model, inputs, samples, cache):
    torch.manual_seed(3)
    live = model.loss(inputs, samples)
    model.teacher_cache = cache
    torch.manual_seed(3)
    cached = model.loss(inputs, samples)
    model.teacher_cache = None
    return live, cached


def flat(losses):
    out = {}
    for k, v in losses.items():
        for i, t in enumerate(v if isinstance(v, list) else [v]):
            out[f'{k}[{i}]'] = t.detach()
    return out


@pytest.mark.parametrize('detector', ['atss', 'ddod', 'gfl'])
def test_cached_teacher_step_equals_live_teacher_step_fp32(detector, tmp_path):
    model, _, inputs, samples, cache = cached_setup(tmp_path, detector)
    # the gathered teacher outputs are the live ones up to the kernels' summation order
    live_feats = model._forward_teacher(inputs)
    got = cache.lookup([s.img_id for s in samples], [s.flip for s in samples], inputs.shape[-2:],
                       ['neck', 'cls_feat', 'reg_feat'])
    for name in ('neck', 'cls_feat', 'reg_feat'):
        for a, b in zip(got[name], live_feats[name]):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), name
    live = assert_losses_close(*live_and_cached(model, inputs, samples, cache), rtol=1e-4, atol=1e-6)
    assert any(k.startswith('loss_pgd') for k in live)


def test_cached_teacher_step_under_bf16_autocast(tmp_path):
    """The mini profile's precision: trunk outputs are bf16 values, stored losslessly in bf16."""
    model, _, inputs, samples, cache = cached_setup(tmp_path, autocast=torch.bfloat16)
    assert cache.entries['neck'][0].dtype == torch.bfloat16
    hook = FeatureAutocastHook()
    hook.wrap(model)
    hook.active = True
    try:
        live, cached = live_and_cached(model, inputs, samples, cache)
    finally:
        hook.active = False
        hook.unwrap()
    # bf16 rounding of a conv output can differ by one unit between batch 1 and batch 4 kernels
    assert_losses_close(live, cached, rtol=2e-2, atol=1e-4)


def test_cache_refuses_what_it_does_not_fit(tmp_path):
    _, ckpt, inputs, _, cache = cached_setup(tmp_path)
    cache.check('sig', ['cls_feat', 'reg_feat'], ckpt)
    with pytest.raises(TeacherCacheError, match='another input pipeline'):
        cache.check('other', [], ckpt)
    with pytest.raises(TeacherCacheError, match=r"lacks the tap\(s\) \['box_feat'\]"):
        cache.check('sig', ['box_feat'], ckpt)
    ckpt.write_bytes(b'retrained')
    with pytest.raises(TeacherCacheError, match='teacher was retrained'):
        cache.check('sig', [], ckpt)
    with pytest.raises(TeacherCacheError, match='one fixed input size'):
        cache.lookup([100], [False], (64, 64), ['neck'])
    with pytest.raises(TeacherCacheError, match=r'no entry for image \(7, True\)'):
        cache.lookup([7], [True], inputs.shape[-2:], ['neck'])
    with pytest.raises(TeacherCacheError, match='teacher cache not found'):
        TeacherCache.load(tmp_path / 'none.pt')


def test_the_teacher_is_named_by_content_not_by_timestamps(tmp_path):
    import hashlib
    import os

    from pgd.models.teacher_cache import teacher_stamp

    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'weights')
    stamp = teacher_stamp(ckpt)
    assert stamp == dict(size=7, sha256=hashlib.sha256(b'weights').hexdigest())
    os.utime(ckpt, (0, 0))                               # copied / touched: the same teacher
    assert teacher_stamp(ckpt) == stamp


def test_a_cache_needs_one_flip_direction():
    from mmengine.config import ConfigDict

    from pgd.build_teacher_cache import _batches
    from pgd.errors import UserError

    cfg = ConfigDict(pipeline=[dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical'])])
    with pytest.raises(UserError, match='needs one direction'):
        next(_batches(None, cfg, 1))


def test_control_never_loads_a_cache(tmp_path):
    """A control (no KD loss) has no teacher pass: its teacher_cache is ignored, even a missing file."""
    torch.manual_seed(0)
    model = MODELS.build(dict(type='DistillDetector', student=tiny_detector_cfg('atss', width=8),
                              teacher_model=tiny_detector_cfg('atss', width=16), kd_losses=[],
                              teacher_cache=dict(file=str(tmp_path / 'missing.pt'), input_signature='s')))
    assert model.teacher_cache is None and not model.needs_teacher_pass


def test_input_signature_ignores_the_flip_probability_only():
    from pgd.teacher_inputs import input_signature

    pipe = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(213, 128), keep_ratio=True),
            dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
    pre = dict(type='DetDataPreprocessor', mean=[1, 2, 3], std=[1, 1, 1])
    sig = input_signature(pipe, pre)
    flipped = [dict(t, prob=1.0) if t['type'] == 'RandomFlip' else t for t in pipe]
    assert input_signature(flipped, pre) == sig
    assert input_signature([dict(t, scale=(160, 96)) if t['type'] == 'Resize' else t for t in pipe], pre) != sig
    assert input_signature(pipe, dict(pre, mean=[0, 0, 0])) != sig


def test_mini_students_read_their_teachers_cache_and_the_digest_ignores_its_location():
    from pgd.config import compose_config
    from pgd.provenance import digest, run_recipe

    def cfg(method, teacher='/runs/atss_r101_teacher', backbone='r50'):
        return compose_config('atss', backbone, 'mini', 'student', method=method, teacher=teacher)

    cache = cfg('pgd').model.teacher_cache
    assert cache.file == '/runs/atss_r101_teacher/teacher_cache.pt'
    # one cache serves every method and both student backbones: the same input signature
    assert {cfg(m, backbone=b).model.teacher_cache.input_signature
            for m in ('pgd', 'fkd', 'fgd', 'defeat') for b in ('r50', 'mbv2')} == {cache.input_signature}
    assert 'teacher_cache' not in cfg('inherit').model          # a control never runs its teacher
    assert 'teacher_cache' not in compose_config('atss', 'r50', 'paper', 'student', method='pgd',
                                                 teacher='/t').model
    moved = cfg('pgd', teacher='/elsewhere/atss_r101_teacher')
    assert digest(run_recipe(moved, teacher_digest='d')) == digest(run_recipe(cfg('pgd'), teacher_digest='d'))


def test_the_signature_follows_overrides_of_the_input_and_the_training_set_but_not_its_location():
    from pgd.config import compose_config

    def sig(*overrides):
        sets = dict(o.split('=', 1) for o in overrides)
        return compose_config('atss', 'r50', 'mini', 'student', method='pgd', teacher='/runs/t',
                              overrides=sets).model.teacher_cache.input_signature

    base = sig()
    assert sig('data_root=/elsewhere/synth_coco/') == base                 # the same set, moved
    assert sig('train_dataloader.dataset.ann_file=annotations/other.json') != base
    assert sig('model.student.data_preprocessor.mean=[0,0,0]') != base
    assert sig('train_dataloader.dataset.pipeline.2.scale=(160,96)') != base


def test_string_image_ids_as_crowdhuman_has_them(tmp_path):
    """CrowdHumanDataset's img_id is a string ('000001,train'): the cache keys and looks them up as such."""
    _, _, inputs, samples, cache = cached_setup(tmp_path, relabel=lambda i: dict(img_id=f'{i:06d},train'))
    got = cache.lookup([s.img_id for s in samples], [s.flip for s in samples], inputs.shape[-2:], ['neck'])
    assert got['neck'][0].shape[0] == len(samples)
    with pytest.raises(TeacherCacheError, match=r'no entry for image \(000009,train, False\)'):
        cache.lookup(['000009,train'], [False], inputs.shape[-2:], ['neck'])
