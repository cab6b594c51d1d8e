"""Where do the plain students stand at another schedule length? Train matrix rows at N iterations and print AP.

The regime checks of docs/protocol.md ask for plain R50 students at >= 0.70 of their teacher's AP (MobileNetV2:
0.55) at no more than the teacher's iterations. This trains each run of `--runs` (plain students: no teacher) with
the mini schedule's shape - warm-up max(10, N / 12), x0.1 steps at 8/12 and 11/12 - at each `--iters` and
`--seeds`, from the DAG's pretrained backbones and data, into `<results>/mini/schedule/<run>_it<N>_s<seed>/`,
evaluates it in the same job and prints its AP beside the DAG's teacher. Runs go two at a time (one torch thread
each), as in the DAG. Outside the DAG: its runs feed no table.

    .venv/bin/python benchmarks/student_schedule.py --runs atss_r50_student fcos_r50_student --iters 900 1200
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outside_dag import REPO, add_override_args, override_words, train_outside_dag  # noqa: E402


def schedule_overrides(iters: int) -> list[str]:
    """`--set` words giving a run the mini schedule's shape at ``iters`` iterations (configs/profiles/mini.py)."""
    sets = {'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters, 'train_cfg.val_begin': iters + 1,
            'param_scheduler.0.end': max(10, iters // 12), 'param_scheduler.1.end': iters,
            'param_scheduler.1.milestones': f'[{iters * 8 // 12},{iters * 11 // 12}]',
            'default_hooks.checkpoint.interval': iters + 1}
    return [w for k, v in sets.items() for w in ('--set', f'{k}={v}')]


def train(run: str, iters: int, seed: int, results: Path, extra: list[str] = (), tag: str = '') -> Path:
    return train_outside_dag(run, results / 'mini' / 'schedule' / f'{run}_it{iters}_s{seed}{tag}', results,
                             ['--seed', str(seed), *schedule_overrides(iters), *extra])


def main(argv: list[str] | None = None) -> int:
    from pgd.matrix import load_matrix

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', nargs='+', required=True, help='plain student run ids of the matrix')
    p.add_argument('--iters', nargs='+', type=int, required=True, help='schedule lengths')
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--results', type=Path, default=REPO / 'results', help='the DAG\'s results root')
    p.add_argument('--jobs', type=int, default=2)
    add_override_args(p)
    a = p.parse_args(argv)
    extra, tag = override_words(p, a)
    matrix = load_matrix()
    for run in a.runs:
        if matrix[run].method is not None:
            p.error(f'{run} is a distilled run; this benchmark trains plain students (no teacher)')
    jobs = list(itertools.product(a.runs, a.iters, a.seeds))
    with ThreadPoolExecutor(a.jobs) as pool:
        dirs = list(pool.map(lambda j: train(*j, a.results, extra, tag), jobs))
    for (run, iters, seed), work in zip(jobs, dirs):
        rec = json.loads((work / 'metrics.json').read_text())
        key = 'MR' if 'MR' in rec else 'AP'
        teacher = next((r.id for r in matrix if r.role == 'teacher' and r.detector == matrix[run].detector
                        and r.dataset == matrix[run].dataset), None)
        t_file = a.results / 'mini' / 'runs' / str(teacher) / 'metrics.json'
        t_val = json.loads(t_file.read_text()).get(key) if t_file.is_file() else None
        ratio = f'{rec[key] / t_val:.2f} of the DAG teacher ({t_val:.1f})' if t_val and key == 'AP' else ''
        print(f'{run:24s} {iters:5d} it  seed {seed}  {key} {rec[key]:5.1f}  {ratio}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
