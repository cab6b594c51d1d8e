"""Every paper-profile model of the matrix builds and loads its ImageNet weights offline.

The paper profile's backbones load the official code's ImageNet files by URL (configs/profiles/paper.py); mmengine
reads an http(s) checkpoint from torch.hub's cache, $TORCH_HOME/hub/checkpoints/<file name>, and downloads only what
is missing. This test fills a private cache with files of the expected names and key layout (the state dicts of
freshly built mmdet backbones, every tensor randomised; the ResNet files also carry torchvision's `fc.*`), forbids
downloads, builds each distinct plain model of the paper-profile runs (a distilled run's student included),
runs init_weights() and checks that every backbone tensor is the cached one.
"""
from __future__ import annotations

import os

import pytest
import torch

from pgd.config import compose_config
from pgd.matrix import load_matrix

pytestmark = pytest.mark.slow


def _imagenet_files(directory) -> dict[str, dict]:
    from mmdet.models.backbones import MobileNetV2, ResNet
    torch.manual_seed(0)
    nets = {'resnet50-0676ba61.pth': ResNet(depth=50), 'resnet101-63fe2227.pth': ResNet(depth=101),
            'mobilenet_v2_batch256_imagenet-ff34753d.pth': MobileNetV2(out_indices=(2, 4, 7))}
    files = {}
    for name, net in nets.items():
        state = {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in net.state_dict().items()}
        if name.startswith('resnet'):   # torchvision's classifier: unexpected by the backbone, to be skipped
            state.update({'fc.weight': torch.randn(1000, 2048), 'fc.bias': torch.randn(1000)})
        torch.save(state, directory / name)
        files[name] = state
    return files


def test_every_paper_model_initialises_from_the_cache_offline(tmp_path, monkeypatch):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import pgd.losses  # noqa: F401
    import pgd.models  # noqa: F401

    register_all_modules()
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    files = _imagenet_files(cache)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))

    def no_download(url, *args, **kwargs):
        raise AssertionError(f'network access: {url}')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)

    models = {}
    for run in load_matrix():
        teacher = f'results/paper/runs/{run.teacher}' if run.teacher else None
        cfg = compose_config(run.detector, run.backbone, 'paper', run.role, run.dataset, method=run.method,
                             method_overrides=run.method_overrides or None, teacher=teacher)
        plain = cfg.model.student if run.method else cfg.model
        models.setdefault(repr(plain), (run.id, plain))
    # 5 detectors x (R101 teacher, R50 student), ATSS / FCOS MobileNetV2, the CrowdHuman DDOD R101 and R50
    assert len(models) == 14, sorted(run_id for run_id, _ in models.values())

    for run_id, model_cfg in models.values():
        name = os.path.basename(model_cfg.backbone.init_cfg.checkpoint)
        assert name in files, f'{run_id}: backbone loads {name}, which the cache does not hold'
        torch.manual_seed(1)
        model = MODELS.build(model_cfg)
        model.init_weights()
        loaded = model.backbone.state_dict()
        cached = files[name]
        assert set(loaded) <= set(cached), f'{run_id}: keys missing from {name}: {sorted(set(loaded) - set(cached))[:3]}'
        differ = [k for k, v in loaded.items() if not torch.equal(v, cached[k])]
        assert not differ, f'{run_id}: {len(differ)} backbone tensors not loaded from {name}, e.g. {differ[:3]}'


@pytest.mark.parametrize('norm', ['code', 'paper'])
@pytest.mark.parametrize('detector,backbone', [('atss', 'r50'), ('ddod', 'r50'), ('gfl', 'r50'), ('fcos', 'r50'),
                                               ('autoassign', 'r50'), ('fcos', 'mbv2')])
def test_paper_pgd_student_takes_a_step(detector, backbone, norm):
    """The paper profile's PGD students (official recipe: code preset, DDODTopkAssigner, caffe-style teachers...)
    and the paper-equation switch build and give finite losses and gradients (random weights, 2 small images)."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules

    import pgd.losses  # noqa: F401
    import pgd.models  # noqa: F401

    register_all_modules()
    teacher = compose_config(detector, 'r101', 'paper', 'teacher').model
    teacher.backbone.init_cfg = None
    cfg = compose_config(detector, backbone, 'paper', 'student', method='pgd',
                         teacher=dict(teacher_model=teacher.to_dict()),
                         overrides={'recipe_switches.pgd_loss_norm': norm})
    cfg.model.student.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 192, 256)] * 2, num_items=[4, 3], num_classes=80)
    data = model.data_preprocessor(packed, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_pgd_cls_fea', 'loss_pgd_cls_att', 'loss_pgd_reg_fea', 'loss_pgd_reg_att'} <= set(losses)
    total, _ = model.parse_losses(losses)
    total.backward()
    assert torch.isfinite(total)
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
