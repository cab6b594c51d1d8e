"""The paper profile against the pinned official recipe (configs/paper_recipe.yaml).

Every paper-profile run of the experiment matrix is composed and each pinned field is read off its config (the PGD
weights through PGDLoss itself, so presets, derived beta / gamma and rescaling count). A value differs from the
official one only where the table says `profile` (with the paper-table evidence) and names the switch that restores
it; that switch is tested too.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pgd.config import compose_config, load_profile
from pgd.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[1]
TABLE = yaml.safe_load((ROOT / 'configs' / 'paper_recipe.yaml').read_text())['entries']
WHEN_KEYS = ('detector', 'backbone', 'role', 'dataset', 'method')


def _plain(cfg):
    return cfg.model.student if cfg.model.type == 'DistillDetector' else cfg.model


def _pgd(cfg):
    from pgd.losses.pgd_loss import PGDLoss
    kd = dict(cfg.model.kd_losses[0])
    kd.pop('type')
    return PGDLoss(**kd).settings


def _resize_scale(pipeline):
    (t,) = [t for t in pipeline if t['type'] in ('Resize', 'RandomResize')]
    return [list(s) for s in t['scale']] if t['type'] == 'RandomResize' else [list(t['scale'])]


def _assigner(cfg, key):
    a = _plain(cfg).train_cfg[key]
    return [a['type'], a['topk'], a.get('alpha')]


FIELDS = {
    'max_epochs': lambda c: c.train_cfg.max_epochs,
    'lr_steps': lambda c: list(c.param_scheduler[1].milestones),
    'warmup_iters': lambda c: c.param_scheduler[0].end,
    'warmup_ratio': lambda c: c.param_scheduler[0].start_factor,
    'optimizer': lambda c: [c.optim_wrapper.optimizer.type, c.optim_wrapper.optimizer.momentum,
                            c.optim_wrapper.optimizer.weight_decay],
    'lr': lambda c: c.optim_wrapper.optimizer.lr,
    'batch_per_gpu': lambda c: c.train_dataloader.batch_size,
    'lr_base_batch': lambda c: c.auto_scale_lr.base_batch_size if c.auto_scale_lr.enable else None,
    'grad_clip': lambda c: c.optim_wrapper.clip_grad.max_norm if c.optim_wrapper.get('clip_grad') else None,
    'train_scale': lambda c: _resize_scale(c.train_dataloader.dataset.pipeline),
    'test_scale': lambda c: _resize_scale(c.test_dataloader.dataset.pipeline)[0],
    # mmengine's AmpOptimWrapper autocasts to fp16 unless given another dtype
    'precision': lambda c: ('fp16' if c.optim_wrapper.type == 'AmpOptimWrapper'
                            and c.optim_wrapper.get('dtype') in (None, 'float16') else 'fp32'),
    'backbone_checkpoint': lambda c: os.path.basename(_plain(c).backbone.init_cfg.checkpoint),
    'backbone_style': lambda c: _plain(c).backbone.get('style', 'pytorch'),
    'frozen_stages': lambda c: _plain(c).backbone.frozen_stages,
    'bn_affine_trained': lambda c: _plain(c).backbone.norm_cfg.requires_grad,
    'bn_stats_frozen': lambda c: _plain(c).backbone.norm_eval,
    'max_per_img': lambda c: _plain(c).test_cfg.max_per_img,
    'assigner': lambda c: _assigner(c, 'assigner'),
    'reg_assigner': lambda c: _assigner(c, 'reg_assigner'),
    'init_student': lambda c: c.model.init_student,
    'teacher_guided_assign': lambda c: (c.pgd['detector'] == 'ddod' if c.model.teacher_guided_assign == 'auto'
                                        else c.model.teacher_guided_assign),
    'pgd.beta_over_alpha': lambda c: _pgd(c).beta / _pgd(c).alpha,
    'pgd.gamma_over_alpha': lambda c: _pgd(c).gamma / _pgd(c).alpha,
    'pgd.level_weights': lambda c: list(_pgd(c).level_weights),
}
for _name in ('k', 'xi_cls', 'xi_reg', 'tau', 'alpha', 'delta', 'spatial_reduce', 'mix_masks_across_batch',
              'reg_loss_norm', 'att_loss_norm', 'topk_inside_box', 'swap_xy_anchor_free', 'gfl_decode_stride_bug'):
    FIELDS[f'pgd.{_name}'] = (lambda n: lambda c: getattr(_pgd(c), n))(_name)

# what every run must have pinned (the rest apply to some detectors / backbones only)
REQUIRED = {'max_epochs', 'lr_steps', 'warmup_iters', 'optimizer', 'lr', 'batch_per_gpu', 'lr_base_batch',
            'grad_clip', 'train_scale', 'test_scale', 'precision', 'backbone_checkpoint', 'frozen_stages',
            'bn_affine_trained', 'bn_stats_frozen', 'max_per_img'}
REQUIRED_PGD = {'init_student', 'teacher_guided_assign', 'pgd.k', 'pgd.xi_cls', 'pgd.xi_reg', 'pgd.tau', 'pgd.alpha',
                'pgd.beta_over_alpha', 'pgd.gamma_over_alpha', 'pgd.delta', 'pgd.level_weights'}
# matrix rows that sweep a value set it themselves (Tables 5 / 6 / 7)
# a matrix row that sets one of these on purpose (an ablation, the initialisation study) is not held to the pin
ROW_OVERRIDDEN = {'k': 'pgd.k', 'alpha': 'pgd.alpha', 'init_student': 'init_student'}


def _attrs(run) -> dict:
    return dict(detector=run.detector, backbone=run.backbone, role=run.role, dataset=run.dataset,
                method=run.method or 'none')


def _matches(when: dict, attrs: dict) -> bool:
    return all(attrs[k] in (v if isinstance(v, list) else [v]) for k, v in when.items())


def _pinned(attrs: dict) -> dict[str, dict]:
    """field -> the last table entry matching the run."""
    out = {}
    for entry in TABLE:
        if _matches(entry.get('when') or {}, attrs):
            out[entry['field']] = entry
    return out


def _compose(run, row_overrides=True, **overrides):
    teacher = f'results/paper/runs/{run.teacher}' if run.teacher else None
    return compose_config(run.detector, run.backbone, 'paper', run.role, run.dataset, method=run.method,
                          method_overrides=(run.method_overrides or None) if row_overrides else None,
                          teacher=teacher, overrides=overrides)


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_table_is_well_formed():
    for entry in TABLE:
        assert entry['field'] in FIELDS, entry
        assert set(entry) <= {'field', 'when', 'official', 'source', 'profile', 'switch', 'decided_by'}, entry
        assert set(entry.get('when') or {}) <= set(WHEN_KEYS), entry
        assert entry.get('source'), f'{entry["field"]} {entry.get("when")}: no official file:line'
        if 'profile' in entry:
            assert entry.get('switch') and entry.get('decided_by'), entry


MATRIX = load_matrix()


@pytest.mark.parametrize('run_id', [r.id for r in MATRIX])
def test_paper_run_resolves_to_the_pinned_recipe(run_id):
    run = MATRIX[run_id]
    cfg = _compose(run)
    pinned = _pinned(_attrs(run))
    required = REQUIRED | (REQUIRED_PGD if run.method == 'pgd' else set())
    skipped = {field for key, field in ROW_OVERRIDDEN.items() if key in run.method_overrides}
    assert required - skipped <= set(pinned), f'{run_id}: nothing pinned for {sorted(required - set(pinned))}'
    wrong = []
    for field, entry in pinned.items():
        if field in skipped:
            continue
        want = entry.get('profile', entry['official'])
        got = FIELDS[field](cfg)
        if not _same(got, want):
            wrong.append(f'{field}: {got!r}, pinned {want!r} ({entry["source"]})')
    assert not wrong, f'{run_id}:\n' + '\n'.join(wrong)


@pytest.mark.parametrize('entry', [e for e in TABLE if 'profile' in e], ids=lambda e: e['field'])
def test_each_deviation_switch_restores_the_official_value(entry):
    name, value = [s.strip() for s in entry['switch'].split(':')]
    runs = [r for r in MATRIX if _matches(entry.get('when') or {}, _attrs(r))]
    assert runs, entry
    # without the row's own overrides (the ATSS rows give k: 30 themselves)
    default = _compose(runs[0], row_overrides=False)
    switched = _compose(runs[0], row_overrides=False, **{f'recipe_switches.{name}': value})
    assert _same(FIELDS[entry['field']](default), entry['profile'])
    assert _same(FIELDS[entry['field']](switched), entry['official'])


def test_every_switch_changes_some_paper_run():
    """A switch that changes nothing would be a dead name in docs/pgd-settings.md."""
    switches = dict(load_profile('paper').recipe_switches)
    alternatives = {'pgd_loss_norm': 'paper', 'atss_k': 'config', 'autoassign_alpha': 'text',
                    'ddod_assigner': 'atss', 'teacher_backbone_style': 'pytorch', 'teacher_grad_clip': '35',
                    'teacher_lr_steps': 'mmdet', 'precision': 'fp32', 'crowdhuman_batch': 'text', 'mbv2_bn': 'frozen'}
    assert set(alternatives) == set(switches)
    # one run each switch is about (the rows' own overrides left out: the ATSS rows give k: 30 themselves)
    probe = {'pgd_loss_norm': 'atss_r50_pgd', 'atss_k': 'atss_r50_pgd', 'autoassign_alpha': 'autoassign_r50_pgd',
             'ddod_assigner': 'ddod_r50_student', 'teacher_backbone_style': 'fcos_r101_teacher',
             'teacher_grad_clip': 'gfl_r101_teacher', 'teacher_lr_steps': 'gfl_r101_teacher',
             'precision': 'atss_r101_teacher', 'crowdhuman_batch': 'ddod_r50_crowd_student',
             'mbv2_bn': 'atss_mbv2_student'}
    for name, value in alternatives.items():
        run = MATRIX[probe[name]]
        default = _compose(run, row_overrides=False).pretty_text
        switched = _compose(run, row_overrides=False, **{f'recipe_switches.{name}': value}).pretty_text
        assert default != switched, f'switch {name}={value} changes nothing in {run.id}'


def test_unknown_switch_is_named():
    from pgd.config import ConfigCompositionError
    with pytest.raises(ConfigCompositionError, match=r"profile 'paper' has no recipe switch \['atss_K'\]"):
        compose_config('atss', 'r50', 'paper', 'student', overrides={'recipe_switches.atss_K': 'config'})


def test_the_mini_profile_has_no_recipe():
    """The recipe is the paper profile's: mini runs compose exactly as before it existed."""
    mini = load_profile('mini')
    assert 'recipe' not in mini and 'recipe_switches' not in mini
    cfg = compose_config('atss', 'r50', 'mini', 'student')
    assert 'recipe_switches' not in cfg.pgd
