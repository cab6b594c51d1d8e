"""`pgd teacher-cache`: run a trained teacher once over its students' training set and save its outputs.

The cache (pgd.models.teacher_cache) holds, for every training image in both flips, what a distillation step
reads from the teacher: FPN outputs, raw head outputs and the taps of PGD's losses (the most any method of the
matrix reads). It is built through a PGD R50 student's composed config, so the images pass the students' own
pipeline, preprocessor and training precision; every student whose input signature agrees (all R50 and MobileNetV2
students of a profile) reads it.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

from pgd.cli_common import parse_overrides, set_threads
from pgd.errors import UserError, debug_enabled, report_user_error
from pgd.teacher_inputs import CACHE_FILE, config_signature


def _batches(model, dataset_cfg, batch_size: int):
    """(inputs, data samples) of the whole training set, unflipped then flipped, in dataset order."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    for flip in (False, True):
        cfg = copy.deepcopy(dataset_cfg)
        flips = [t for t in cfg.pipeline if t.get('type') == 'RandomFlip']
        if len(flips) != 1:
            raise UserError(f'teacher cache: the students\' train pipeline must hold one RandomFlip, has {len(flips)}')
        direction = flips[0].get('direction', 'horizontal')
        if not isinstance(direction, str):
            # with several directions a flipped sample could be either one: (image, flip) would not name it
            raise UserError(f'teacher cache: the students\' RandomFlip has directions {direction}; a cache needs '
                            'one direction (or drop the profile\'s teacher_cache)')
        flips[0]['prob'] = 1.0 if flip else 0.0
        dataset = DATASETS.build(cfg)
        for start in range(0, len(dataset), batch_size):
            batch = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            data = model.data_preprocessor(batch, training=True)
            yield data['inputs'], data['data_samples']


def build(teacher_dir: Path, profile: str, out: Path, overrides: dict | None = None,
          student_backbone: str = 'r50') -> Path:
    import torch
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import pgd.losses  # noqa: F401  (registers the KD losses)
    import pgd.models  # noqa: F401
    from pgd.atomic import atomic_path
    from pgd.checkpoint import install_safe_globals
    from pgd.config import compose_config
    from pgd.models.teacher_cache import build_cache

    config, checkpoint = teacher_dir / 'config.py', teacher_dir / 'model.pth'
    for f in (config, checkpoint):
        if not f.is_file():
            raise UserError(f'{f} not found: --teacher-dir must be a trained run directory (config.py, model.pth)')
    run = Config.fromfile(str(config)).get('pgd') or {}
    if not run.get('detector'):
        raise UserError(f'{config} does not say which detector it is (no `pgd` section): not a `pgd train` run')
    register_all_modules()
    install_safe_globals()
    cfg = compose_config(run['detector'], student_backbone, profile, 'student', run.get('dataset', 'coco'),
                         method='pgd', teacher=str(teacher_dir), overrides=overrides)
    cfg.model.pop('teacher_cache', None)
    signature = config_signature(cfg)
    dataset = cfg.train_dataloader.dataset
    model = MODELS.build(cfg.model)
    autocast = next((torch.bfloat16 for h in cfg.get('custom_hooks', [])
                     if h.get('type') == 'FeatureAutocastHook'), None)
    data = build_cache(model, _batches(model, cfg.train_dataloader.dataset, int(cfg.train_dataloader.batch_size)),
                       signature, checkpoint, autocast)
    # for a reader of the file: which annotation file it was computed on (the signature names it relatively)
    data['meta']['ann_file'] = str(Path(dataset.get('data_root', '')) / dataset.get('ann_file', ''))
    with atomic_path(out) as tmp:
        torch.save(data, tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='pgd teacher-cache', description=__doc__.split('\n\n')[0])
    p.add_argument('--teacher-dir', required=True, type=Path, help='the teacher\'s run directory')
    p.add_argument('--profile', default='mini', help='the students\' profile (default %(default)s)')
    p.add_argument('--out', type=Path, default=None, help=f'default <teacher dir>/{CACHE_FILE}')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default $PGD_THREADS)')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                   help='config override of the students\' composition, as `pgd train --set` (e.g. data_root=...)')
    a = p.parse_args(argv)
    set_threads(a.threads)
    try:
        out = build(a.teacher_dir, a.profile, a.out or a.teacher_dir / CACHE_FILE, parse_overrides(a.overrides))
    except UserError as err:
        if debug_enabled():
            raise
        return report_user_error('pgd teacher-cache', err)
    size = os.path.getsize(out) / 2 ** 20
    print(f'pgd teacher-cache: wrote {out} ({size:.0f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
