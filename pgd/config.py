"""Compose one run's mmengine Config from the config tree (docs/ARCHITECTURE.md, "Configs").

A run = architecture (configs/detectors/<detector>_<backbone>.py)
      + data (configs/_base_/datasets/<profile.datasets[dataset]>.py)
      + schedule (configs/_base_/schedules/<profile.schedules[role]>.py, or a dict in the profile)
      + runtime (configs/_base_/default_runtime.py)
      + the profile's scale settings (configs/profiles/<profile>.py)
      + optionally the distiller wrapper (configs/distill/<method>.py)
      + dotted overrides, applied last.

The profile's scale keys never touch the architecture except the backbone's init / frozen-stage / BN-mode keys;
a profile's `recipe` (pgd/recipe.py; the paper profile's official per-run settings) may, each rule by name, so a
mini run and a paper run of the same detector build the same network up to those named rules.
"""
from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Mapping

from mmengine.config import Config, ConfigDict

from pgd import recipe as _recipe
from pgd.errors import UserError
from pgd.suggest import did_you_mean
from pgd.vocab import BACKBONES, DATASETS, DETECTORS, ROLES, config_root, kd_loss_keywords, kd_loss_types, methods

# keys of the distiller itself (DistillDetector's keyword arguments a method may tune); every other
# method_overrides key goes to the KD loss configs
DISTILLER_KEYS = ('init_student', 'teacher_guided_assign')
# `--set +key=value` adds a key the composed config does not have; without the '+' an unknown key is a typo
NEW_KEY_PREFIX = '+'
# what a profile may set on a backbone: initialisation and BN / freezing mode, nothing structural
PROFILE_BACKBONE_KEYS = ('init_cfg', 'frozen_stages', 'norm_eval', 'norm_cfg')
# the profile keys compose_config reads (an unknown key is a typo, not a silent no-op)
PROFILE_KEYS = {'datasets', 'schedules', 'img_scale', 'ms_scale_range', 'train_batch_size', 'num_workers',
                'eval_images', 'test_batch_size', 'optim_wrapper', 'auto_scale_lr', 'backbone', 'runtime', 'pretrain',
                'train_precision', 'recipe', 'recipe_switches', 'student_init', 'teacher_cache'}
# train_precision: 'fp32', or 'bf16' = backbone / neck / head convolutions under bf16 autocast while training,
# assignment and losses in fp32 (pgd.models.feature_autocast.FeatureAutocastHook)
TRAIN_PRECISIONS = ('fp32', 'bf16')
# recipe / recipe_switches: per-run settings of a profile (pgd/recipe.py)
# student_init: how every distilled student of the profile starts. 'method' (or absent): as its method's config says
# (the official initialisation: PGD and FGD copy the teacher's neck and head in, the others do not); 'teacher':
# every KD method starts from the teacher's neck and head, so that a table compares losses, not initialisations;
# 'random': none does. A matrix row's method_overrides (init_student) still wins. A control method (a config
# with `control = True`, e.g. `inherit`) keeps its own.
STUDENT_INITS = {'method': None, 'teacher': True, 'random': False}
# teacher_cache: True = a distilled student reads its teacher's outputs from <teacher run dir>/teacher_cache.pt
# (`pgd teacher-cache`, pgd.models.teacher_cache) instead of running the teacher in every step; for profiles whose
# students train at one fixed input size.


class ConfigCompositionError(UserError, ValueError):
    """A run cannot be composed (unknown detector, missing file, malformed profile...)."""


def available_profiles() -> list[str]:
    return sorted(p.stem for p in (config_root() / 'profiles').glob('*.py'))


def available_methods() -> list[str]:
    return list(methods())


def _choose(kind: str, value: Any, allowed) -> str:
    if value not in allowed:
        raise ConfigCompositionError(f'unknown {kind} {value!r}; expected one of {sorted(allowed)}'
                                     + did_you_mean(value, allowed))
    return value


def _load(path: Path, what: str) -> Config:
    if not path.is_file():
        raise ConfigCompositionError(f'{what} config not found: {path}')
    # parsed once per process and handed out as copies: the workflow composes every run of the matrix at parse
    # time (run digests), and re-reading the same ~25 files for 85 runs cost seconds per `snakemake` call.
    # The key holds what a parse depends on: the file (and its _base_ files, through their mtimes) and the
    # environment that {{$VAR:default}} substitutions read.
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, _tree_stamp(path),
           tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith('PGD_'))))
    if key not in _PARSED:
        try:
            # custom_imports stay unexecuted here: composing needs no registry, and importing mmdet would cost
            # every `snakemake` start ~6 s. The Runner's config (config.py, parsed again) executes them.
            _PARSED[key] = Config.fromfile(str(path), import_custom_modules=False)
        # a config's own check of its inputs (mini's $PGD_MINI_TEACHER_ITERS), or mmengine's KeyError for a
        # {{$VAR:default}} that is set but empty
        except (ValueError, KeyError) as exc:
            raise ConfigCompositionError(f'{what} config {path}: {exc}') from exc
    return copy.deepcopy(_PARSED[key])


_PARSED: dict[tuple, Config] = {}


def _tree_stamp(path: Path) -> tuple:
    """mtimes of the config tree's files: an edited `_base_` file invalidates every parse that may include it."""
    root = config_root()
    files = root.rglob('*.py') if path.resolve().is_relative_to(root.resolve()) else ()
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in files))


def load_profile(profile: str) -> Config:
    _choose('profile', profile, available_profiles())
    prof = _load(config_root() / 'profiles' / f'{profile}.py', 'profile')
    unknown = {k for k in prof.keys() if not k.startswith('_')} - PROFILE_KEYS
    if unknown:
        raise ConfigCompositionError(f'profile {profile!r} sets unknown keys {sorted(unknown)}; '
                                     f'a profile may set only {sorted(PROFILE_KEYS)}')
    missing = {'datasets', 'schedules', 'img_scale', 'train_batch_size', 'optim_wrapper', 'backbone'} - set(prof)
    if missing:
        raise ConfigCompositionError(f'profile {profile!r} lacks required keys {sorted(missing)}')
    test_batch = prof.get('test_batch_size')
    if test_batch is not None and (isinstance(test_batch, bool) or not isinstance(test_batch, int) or test_batch < 1):
        raise ConfigCompositionError(f'profile test_batch_size must be a positive int, got {test_batch!r}')
    check_student_init(profile, prof.get('student_init'))
    return prof


def check_student_init(profile: str, value: Any) -> str:
    """A profile's student_init (absent: 'method'), or a ConfigCompositionError naming the choices."""
    value = 'method' if value is None else value
    if value not in STUDENT_INITS:
        raise ConfigCompositionError(f'profile {profile!r}: student_init {value!r} is not one of '
                                     f'{", ".join(STUDENT_INITS)}{did_you_mean(str(value), STUDENT_INITS)}')
    return value


def _merge(cfg: Config, other: Mapping) -> None:
    """mmengine's merge (honours `_delete_`), for nested plain dicts."""
    cfg.merge_from_dict(dict(other), allow_list_keys=False)


def _set_resize(pipeline: list, transform: dict, where: str) -> None:
    idx = [i for i, t in enumerate(pipeline) if t['type'] in ('Resize', 'RandomResize', 'RandomChoiceResize')]
    if len(idx) != 1:
        raise ConfigCompositionError(f'{where} must hold exactly one resize transform, found {len(idx)}')
    pipeline[idx[0]] = transform


def _apply_data(cfg: Config, prof: Config, role: str, dataset: str) -> None:
    scale = tuple(prof.img_scale[dataset])
    train_pipe = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    if role == 'teacher' and prof.get('ms_scale_range'):
        # mmdet 2's multiscale_mode='range': sample (long, short) uniformly between the two scales
        resize = dict(type='RandomResize', scale=[tuple(s) for s in prof.ms_scale_range[dataset]], keep_ratio=True)
    else:
        resize = dict(type='Resize', scale=scale, keep_ratio=True)
    _set_resize(train_pipe, resize, 'train pipeline')
    test_pipe = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    _set_resize(test_pipe, dict(type='Resize', scale=scale, keep_ratio=True), 'test pipeline')

    cfg.train_dataloader.dataset.pipeline = train_pipe
    cfg.train_dataloader.batch_size = int(prof.train_batch_size)
    workers = int(prof.get('num_workers', 2))
    test_batch = prof.get('test_batch_size')
    for key in ('val_dataloader', 'test_dataloader'):
        loader = copy.deepcopy(cfg[key])
        loader.dataset.pipeline = copy.deepcopy(test_pipe)
        loader.num_workers = workers
        loader.persistent_workers = workers > 0
        if test_batch is not None:
            loader.batch_size = test_batch
        if prof.get('eval_images'):
            loader.dataset.indices = int(prof.eval_images)
        cfg[key] = loader
    cfg.train_dataloader.num_workers = workers
    cfg.train_dataloader.persistent_workers = workers > 0


def _apply_schedule(cfg: Config, prof: Config, role: str) -> None:
    sched = prof.schedules[role]
    if isinstance(sched, str):
        sched = _load(config_root() / '_base_' / 'schedules' / f'{sched}.py', 'schedule').to_dict()
    for key, value in dict(sched).items():
        if key == 'default_hooks':
            _merge(cfg, {'default_hooks': value})
        else:
            cfg[key] = copy.deepcopy(value)
    cfg.optim_wrapper = copy.deepcopy(prof.optim_wrapper)
    if prof.get('auto_scale_lr') is not None:
        cfg.auto_scale_lr = copy.deepcopy(prof.auto_scale_lr)


def _apply_precision(cfg: Config, prof: Config, profile: str) -> None:
    precision = prof.get('train_precision', 'fp32')
    if precision not in TRAIN_PRECISIONS:
        raise ConfigCompositionError(f'profile {profile!r}: train_precision must be one of {TRAIN_PRECISIONS}, '
                                     f'got {precision!r}')
    if precision == 'bf16':
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(type='FeatureAutocastHook',
                                                                        dtype='bfloat16')]


def _apply_backbone(model: ConfigDict, prof: Config, backbone: str) -> None:
    settings = dict(prof.backbone.get(backbone) or {})
    bad = set(settings) - set(PROFILE_BACKBONE_KEYS)
    if bad:
        raise ConfigCompositionError(f'profile backbone settings for {backbone} may only set '
                                     f'{PROFILE_BACKBONE_KEYS}, not {sorted(bad)}')
    for key, value in settings.items():
        model.backbone[key] = copy.deepcopy(value)


def local_pretrained_checkpoint(backbone_cfg: Mapping) -> str | None:
    """The local file a backbone's ``init_cfg`` loads (``Pretrained``, not a ``torchvision://``-style URL), or None."""
    init = backbone_cfg.get('init_cfg') or {}
    ckpt = str(init.get('checkpoint', '')) if init.get('type') == 'Pretrained' else ''
    return ckpt if ckpt and '://' not in ckpt else None


def _set_pretrained_dir(model: ConfigDict, profile: str, backbone: str, directory: str) -> None:
    """Load the backbone from ``<directory>/<backbone>.pth`` (written by `pgd pretrain`) instead of the profile's
    default location. Only for profiles whose backbones start from a local checkpoint."""
    init = model.backbone.get('init_cfg') or {}
    if local_pretrained_checkpoint(model.backbone) is None:
        raise ConfigCompositionError(f'pretrained_dir given, but profile {profile!r} does not initialise the '
                                     f'{backbone} backbone from a local checkpoint (init_cfg={init})')
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=f'{directory.rstrip("/")}/{backbone}.pth')


def _set_data_root(cfg: Config, root: str) -> None:
    """Point every dataset and evaluator of the run at another root (tests, relocated data)."""
    old = None
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if not cfg.get(key):   # a saved test config may have no val loader
            continue
        ds = cfg[key].dataset
        old = old or ds.data_root
        ds.data_root = root
    for key in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(key)
        if ev and isinstance(ev.get('ann_file'), str) and old and ev.ann_file.startswith(old):
            ev.ann_file = os.path.join(root, ev.ann_file[len(old):].lstrip('/'))


def _unknown_key(cfg: Mapping, dotted: str) -> str | None:
    """Why ``dotted`` does not name an existing entry of ``cfg`` (None when it does)."""
    node: Any = cfg
    parts = dotted.split('.')
    for i, part in enumerate(parts):
        where = '.'.join(parts[:i]) or 'the config'
        if isinstance(node, (Mapping, Config)):
            if part not in node:
                keys = sorted(str(k) for k in node.keys())
                return (f'{where} has no key {part!r}{did_you_mean(part, keys)}; its keys: '
                        f'{", ".join(keys[:30])}{" ..." if len(keys) > 30 else ""}')
            node = node[part]
        elif isinstance(node, (list, tuple)):
            if not (part.lstrip('-').isdigit() and -len(node) <= int(part) < len(node)):
                return f'{where} is a list of {len(node)} entries; {part!r} is not an index of it'
            node = node[int(part)]
        else:
            return f'{where} is {str(node)[:60]!r}, not a dict: it has no key {part!r}'
    return None


def apply_overrides(cfg: Config, overrides: Mapping[str, Any] | None) -> None:
    """Apply `--set` overrides (dotted keys, list indices allowed) to a composed or saved config.

    A key must name an entry the config has, so a typo (``train_cfg.max_iter``) fails instead of adding a key
    that nothing reads; ``+key`` adds a new one on purpose. The plain key ``data_root`` re-points every dataset
    and evaluator of the run (:func:`_set_data_root`).
    """
    overrides = dict(overrides or {})
    if 'data_root' in overrides:
        _set_data_root(cfg, str(overrides.pop('data_root')))
    plain = {}
    for key, value in overrides.items():
        if key.startswith(NEW_KEY_PREFIX):
            plain[key[len(NEW_KEY_PREFIX):]] = value
            continue
        why = _unknown_key(cfg, key)
        if why:
            raise ConfigCompositionError(f'--set {key}: {why}. To add a new key on purpose, write '
                                         f'--set {NEW_KEY_PREFIX}{key}=VALUE')
        plain[key] = value
    if plain:
        try:
            cfg.merge_from_dict(plain, allow_list_keys=True)
        except (KeyError, TypeError, IndexError, AttributeError) as err:
            raise ConfigCompositionError(f'cannot apply overrides {plain}: {err}') from err


@functools.lru_cache(maxsize=None)
def _distill_loss_types(path: Path, mtime_ns: int) -> tuple[str, ...]:
    dcfg = _load(path, 'distill')
    return tuple(loss.get('type') for loss in (dcfg.get('distill') or {}).get('kd_losses') or [])


def distill_loss_types(method: str) -> tuple[str, ...]:
    """The KD loss types configs/distill/<method>.py puts in ``distill.kd_losses``."""
    _choose('method', method, available_methods())
    path = config_root() / 'distill' / f'{method}.py'
    # the matrix asks once per row: parse each file once (per version of it)
    return _distill_loss_types(path, path.stat().st_mtime_ns)


def method_override_keys(method: str) -> dict[str, str] | None:
    """Every key a matrix row's ``method_overrides`` may set for ``method``, mapped to what reads it: the
    distiller (DISTILLER_KEYS) or the KD loss of configs/distill/<method>.py whose keyword it is (the keywords
    come from the loss classes themselves, :func:`pgd.vocab.kd_loss_keywords`). None when the method uses a KD
    loss registered outside pgd/losses, whose keywords are not known before it is built."""
    keys = {k: 'DistillDetector' for k in DISTILLER_KEYS}
    for loss_type in distill_loss_types(method):
        if loss_type not in kd_loss_types():
            return None
        for key in kd_loss_keywords(loss_type):
            keys.setdefault(key, loss_type)
    return keys


def check_method_overrides(method: str, overrides: Mapping | None) -> None:
    """Refuse a method_overrides key that neither the distiller nor the method's KD losses accept."""
    allowed = method_override_keys(method)
    for key in overrides or {}:
        if allowed is not None and key not in allowed:
            raise ConfigCompositionError(
                f'method {method!r} has no option {key!r}{did_you_mean(key, allowed)}; its options: '
                f'{", ".join(sorted(allowed))}')


def _distill_model(student: ConfigDict, detector: str, backbone: str, dataset: str, method: str,
                   method_overrides: Mapping | None, teacher, recipe_kd: Mapping | None = None,
                   student_init: str = 'method') -> dict:
    _choose('method', method, available_methods())
    dcfg = _load(config_root() / 'distill' / f'{method}.py', 'distill')
    if 'distill' not in dcfg:
        raise ConfigCompositionError(f'configs/distill/{method}.py must define `distill = dict(kd_losses=[...])`')
    distill = copy.deepcopy(dcfg.distill.to_dict())
    kd_losses = distill.get('kd_losses')
    control = bool(dcfg.get('control', False))
    if control and (kd_losses or distill.get('init_student') is not True):
        raise ConfigCompositionError(f'configs/distill/{method}.py: a control (control = True) is the student '
                                     'with the teacher\'s neck and head copied in and no KD loss: set '
                                     'init_student=True and kd_losses=[]')
    if not kd_losses and not control:
        raise ConfigCompositionError(f'configs/distill/{method}.py: distill.kd_losses is empty (a student without '
                                     'KD losses is the plain student, or a control: set `control = True`)')
    if not control and STUDENT_INITS[student_init] is not None:
        distill['init_student'] = STUDENT_INITS[student_init]
    # per-detector hyper-parameters (e.g. PGD's alpha/K/tau), most specific last
    per = dcfg.get('detector_overrides') or {}
    loss_updates: dict = {}
    for key in (detector, f'{detector}_{backbone}', f'{detector}_{dataset}'):
        loss_updates.update(dict(per.get(key) or {}))
    check_method_overrides(method, method_overrides)
    loss_updates.update(dict(recipe_kd or {}))  # the profile's recipe (pgd/recipe.py), before the row's overrides
    dist_updates = {}
    for key, value in dict(method_overrides or {}).items():
        (dist_updates if key in DISTILLER_KEYS else loss_updates)[key] = value
    for loss in kd_losses:
        loss.update(copy.deepcopy(loss_updates))
    distill.update(dist_updates)

    if teacher is None:
        raise ConfigCompositionError(f'method {method!r} needs a teacher (a run directory or '
                                     'dict(config=..., checkpoint=...))')
    if isinstance(teacher, (str, os.PathLike)):
        run_dir = Path(teacher)
        teacher = dict(config=str(run_dir / 'config.py'), checkpoint=str(run_dir / 'model.pth'))
    teacher = dict(teacher)
    if not ({'config', 'checkpoint'} <= set(teacher) or 'teacher_model' in teacher):
        raise ConfigCompositionError(f'teacher must give config and checkpoint, got keys {sorted(teacher)}')
    model = dict(type='DistillDetector', student=student.to_dict())
    if 'teacher_model' in teacher:  # tests: an untrained teacher built from a model config
        model['teacher_model'] = teacher['teacher_model']
    else:
        model['teacher'] = teacher
    model.update(distill)
    return model


def _use_teacher_cache(cfg: Config, detector: str) -> None:
    """Point a distilled run that runs its teacher at the teacher's cache, with the input signature it needs."""
    from pgd.teacher_inputs import CACHE_FILE

    model = cfg.model
    guided = model.get('teacher_guided_assign', False)
    if not model.get('kd_losses') and not (guided is True or (guided == 'auto' and detector == 'ddod')):
        return   # a control: the teacher never runs
    teacher = model.get('teacher')
    if not teacher or 'checkpoint' not in teacher:
        return   # a teacher built from a model config (tests): nothing to cache
    # the signature is filled in after the --set overrides (_refresh_cache_signature), once
    model['teacher_cache'] = dict(file=str(Path(teacher['checkpoint']).parent / CACHE_FILE), input_signature=None)


def _refresh_cache_signature(cfg: Config) -> None:
    """The cache's input signature, from the input the run has after its `--set` overrides (an override of the
    pipeline, the preprocessor or the training set must not read a cache built for another)."""
    from pgd.teacher_inputs import config_signature

    cache = cfg.model.get('teacher_cache') if isinstance(cfg.get('model'), dict) else None
    if isinstance(cache, dict) and 'input_signature' in cache:
        cache['input_signature'] = config_signature(cfg)


def compose_config(detector: str, backbone: str, profile: str, role: str, dataset: str = 'coco',
                   method: str | None = None, method_overrides: Mapping | None = None, teacher=None,
                   work_dir: str | os.PathLike | None = None, seed: int = 0,
                   overrides: Mapping | None = None) -> Config:
    """The full mmengine Config of one run (see the module docstring for the layers).

    `teacher` is a teacher run directory (holding config.py and model.pth) or dict(config=..., checkpoint=...).
    `overrides` are dotted keys applied last (`train_cfg.max_iters=20`; `+key` for a key the config lacks, see
    :func:`apply_overrides`); the plain key `data_root` re-points every dataset and evaluator of the run,
    `pretrained_dir` the backbone's local pretrained checkpoint.
    """
    _choose('detector', detector, DETECTORS)
    _choose('backbone', backbone, BACKBONES)
    _choose('role', role, ROLES)
    _choose('dataset', dataset, DATASETS)
    prof = load_profile(profile)
    root = config_root()

    cfg = _load(root / '_base_' / 'default_runtime.py', 'runtime')
    data_name = prof.datasets.get(dataset)
    if not data_name:
        raise ConfigCompositionError(f'profile {profile!r} names no data for dataset {dataset!r}')
    data = _load(root / '_base_' / 'datasets' / f'{data_name}.py', 'dataset')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator'):
        cfg[key] = copy.deepcopy(data[key])
    arch = _load(root / 'detectors' / f'{detector}_{backbone}.py', 'detector')
    cfg.custom_imports = copy.deepcopy(arch.custom_imports)
    model = copy.deepcopy(arch.model)
    model.bbox_head.num_classes = int(data.num_classes)
    _apply_backbone(model, prof, backbone)
    overrides = dict(overrides or {})
    if 'pretrained_dir' in overrides:
        _set_pretrained_dir(model, profile, backbone, str(overrides.pop('pretrained_dir')))
    run = dict(detector=detector, backbone=backbone, role=role, dataset=dataset, method=method)
    try:
        switches = _recipe.resolve_switches(profile, prof.get('recipe_switches'),
                                            _recipe.pop_switch_overrides(overrides))
        rules = _recipe.matching_rules(profile, prof.get('recipe'), run, switches)
        for rule in rules:
            _recipe.apply(model, rule.get('model'))
    except _recipe.RecipeError as err:
        raise ConfigCompositionError(str(err)) from err
    recipe_kd: dict = {}
    for rule in rules:
        recipe_kd.update(dict(rule.get('kd_loss') or {}))

    _apply_data(cfg, prof, role, dataset)
    _apply_schedule(cfg, prof, role)
    if prof.get('runtime'):
        _merge(cfg, prof.runtime)
    _apply_precision(cfg, prof, profile)
    try:
        for rule in rules:
            _recipe.apply(cfg, rule.get('cfg'))
    except _recipe.RecipeError as err:
        raise ConfigCompositionError(str(err)) from err

    if method is not None:
        cfg.model = _distill_model(model, detector, backbone, dataset, method, method_overrides, teacher,
                                   recipe_kd, check_student_init(profile, prof.get('student_init')))
        if prof.get('teacher_cache'):
            _use_teacher_cache(cfg, detector)
    else:
        if method_overrides:
            raise ConfigCompositionError('method_overrides given without a method')
        cfg.model = model

    cfg.randomness = dict(seed=int(seed), deterministic=False)
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    # what the run is, for the train/eval entry points and MLflow tags (not read by mmengine)
    cfg.pgd = dict(detector=detector, backbone=backbone, profile=profile, role=role, dataset=dataset,
                   method=method, method_overrides=dict(method_overrides or {}))
    if switches:
        cfg.pgd['recipe_switches'] = switches
        cfg.pgd['recipe_rules'] = [r.get('name', '') for r in rules]

    apply_overrides(cfg, overrides)
    _refresh_cache_signature(cfg)
    return cfg
