"""Train and evaluate one matrix run of the mini profile outside the DAG, from the DAG's data and pretrained
backbones (benchmarks/teacher_convergence.py, benchmarks/student_schedule.py). One torch thread, no MLflow; a run
directory that already holds metrics.json is kept."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_override_args(parser) -> None:
    """`--set KEY=VALUE` (repeatable) changes the recipe under test; `--tag` names the variant in the work dir."""
    parser.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE',
                        help='a `pgd train --set` override of the run (e.g. optim_wrapper.optimizer.lr=0.003)')
    parser.add_argument('--tag', default='', help='suffix of the work dirs, required with --set so that a variant '
                        'never reuses the plain recipe\'s results')


def override_words(parser, args) -> tuple[list[str], str]:
    """The `--set` words and the work-dir suffix of a parsed `add_override_args` command line."""
    if args.sets and not args.tag:
        parser.error('--set needs --tag NAME: the variant\'s runs get their own work dirs')
    if args.tag and not re.fullmatch(r'[\w.-]+', args.tag):
        parser.error(f'--tag {args.tag!r}: use letters, digits, ".", "-" and "_" only')
    return [w for kv in args.sets for w in ('--set', kv)], (f'_{args.tag}' if args.tag else '')


def train_outside_dag(run: str, work: Path, results: Path, extra: list[str] = (), env: dict | None = None) -> Path:
    if (work / 'metrics.json').is_file():
        return work
    data = {'coco': results / 'data' / 'synth_coco', 'crowdhuman': results / 'data' / 'synth_crowd'}
    dataset = 'crowdhuman' if 'crowd' in run else 'coco'
    cmd = [sys.executable, '-m', 'pgd.cli', 'train', '--run', run, '--profile', 'mini', '--work-dir', str(work),
           '--eval', '--no-mlflow', '--threads', '1', '--resume', '--results', str(results),
           '--set', f'data_root={data[dataset].resolve()}/',
           '--set', f'pretrained_dir={(results / "mini" / "pretrained").resolve()}', *extra]
    work.mkdir(parents=True, exist_ok=True)
    with open(work / 'train.log', 'w') as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                       env={**os.environ, 'PGD_THREADS': '1', **(env or {})})
    return work
