"""FeatureAutocastHook: the conv trunk (backbone, neck, head) trains under bf16 autocast, everything it returns and
every loss stays fp32; validation / test run fp32; the profile key switches it on."""
from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import pgd.losses  # noqa: F401
import pgd.models  # noqa: F401
from pgd.config import ConfigCompositionError, compose_config
from pgd.models.feature_autocast import FeatureAutocastHook, to_float32, trunk_modules

from test_distiller import distiller_cfg
from tiny_detectors import tiny_batch, tiny_detector_cfg

register_all_modules()
torch.set_num_threads(1)


def test_to_float32_casts_nested_low_precision_tensors_only():
    Pair = namedtuple('Pair', 'a b')
    ints = torch.arange(3)
    out = to_float32(([torch.ones(2, dtype=torch.bfloat16)], {'k': Pair(torch.ones(1, dtype=torch.float16), ints)},
                      torch.zeros(1, dtype=torch.float64), 'text'))
    assert out[0][0].dtype == torch.float32
    assert isinstance(out[1]['k'], Pair) and out[1]['k'].a.dtype == torch.float32
    assert out[1]['k'].b is ints                          # integer tensors untouched
    assert out[2].dtype == torch.float32 and out[3] == 'text'


def _conv_dtypes(module):
    """Output dtypes of every Conv2d inside ``module`` during the next forward."""
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
               for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    return seen, handles


@pytest.mark.parametrize('detector', ['atss', 'gfl'])
def test_trunk_runs_bf16_but_returns_fp32_and_losses_match(detector):
    torch.manual_seed(0)
    model = MODELS.build(tiny_detector_cfg(detector))
    model.init_weights()
    inputs, samples = tiny_batch(model)
    model.train()
    ref = {k: float(sum(v) if isinstance(v, list) else v) for k, v in model.loss(inputs, samples).items()}

    hook = FeatureAutocastHook()
    hook.wrap(model)
    assert {id(m) for m in trunk_modules(model)} == {id(model.backbone), id(model.neck), id(model.bbox_head)}
    seen, handles = _conv_dtypes(model.backbone)
    hook.active = True
    feats = model.extract_feat(inputs)
    assert seen and set(seen) == {torch.bfloat16}           # the convolutions ran in bf16 ...
    assert all(f.dtype == torch.float32 for f in feats)     # ... what leaves the trunk is fp32
    outs = model.bbox_head(feats)
    assert all(t.dtype == torch.float32 for level in outs for t in level)
    losses = model.loss(inputs, samples)
    for key, value in losses.items():
        value = sum(value) if isinstance(value, list) else value
        assert value.dtype == torch.float32
        # bf16 keeps ~3 significant digits: the losses agree with the fp32 ones to a few percent
        assert float(value) == pytest.approx(ref[key], rel=0.05, abs=0.02), key
    sum(v if not isinstance(v, list) else sum(v) for v in losses.values()).backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())

    hook.active = False                                     # outside train iterations: plain fp32
    seen.clear()
    model.extract_feat(inputs)
    assert set(seen) == {torch.float32}
    for h in handles:
        h.remove()
    hook.unwrap()
    assert all('forward' not in vars(m) for m in (model.backbone, model.neck, model.bbox_head))


def test_distiller_teacher_is_wrapped_and_kd_losses_are_fp32():
    torch.manual_seed(0)
    model = MODELS.build(distiller_cfg('atss'))
    model.init_weights()
    inputs, samples = tiny_batch(model.student)
    model.train()
    ref = {k: float(sum(v) if isinstance(v, list) else v) for k, v in model.loss(inputs, samples).items()}
    hook = FeatureAutocastHook()
    hook.wrap(model)
    wrapped = {id(m) for m in trunk_modules(model)}
    for net in (model.student, model.teacher):
        assert {id(net.backbone), id(net.neck), id(net.bbox_head)} <= wrapped
    hook.active = True
    losses = model.loss(inputs, samples)
    kd = [k for k in losses if 'pgd' in k or 'kd' in k]
    assert kd
    for key in kd:
        assert losses[key].dtype == torch.float32
        assert float(losses[key]) == pytest.approx(ref[key], rel=0.1, abs=0.05), key


def test_small_input_dcn_runs_fp32_inside_autocast():
    from pgd.models.layers.small_input_dcn import SmallInputDeformConv2dPack

    torch.manual_seed(0)
    conv = SmallInputDeformConv2dPack(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 5, 5)
    ref = conv(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = conv(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, conv(x.bfloat16().float()))
    assert (out - ref).abs().max() < 0.05


def test_profile_key_adds_the_hook(monkeypatch):
    import pgd.config as config

    real = config.load_profile

    def with_precision(value):
        def load(profile):
            prof = real(profile)
            prof.train_precision = value
            return prof
        return load

    monkeypatch.setattr(config, 'load_profile', with_precision('bf16'))
    cfg = compose_config('atss', 'r50', 'mini', 'student')
    assert dict(type='FeatureAutocastHook', dtype='bfloat16') in cfg.custom_hooks
    monkeypatch.setattr(config, 'load_profile', with_precision('fp32'))
    hooks = compose_config('atss', 'r50', 'mini', 'student').get('custom_hooks') or []
    assert all(h['type'] != 'FeatureAutocastHook' for h in hooks)
    monkeypatch.setattr(config, 'load_profile', with_precision('fp16'))
    with pytest.raises(ConfigCompositionError, match='train_precision'):
        compose_config('atss', 'r50', 'mini', 'student')


def test_hook_rejects_unknown_dtype():
    with pytest.raises(ValueError, match='dtype'):
        FeatureAutocastHook(dtype='int8')
