"""Are the mini teachers converged? Train a teacher at `--factor` x its schedule and compare COCO AP (or MR).

The convergence test of docs/protocol.md: a teacher counts as converged when 1.5x its iterations gain less than
1.5 AP. Each teacher of `--runs` is retrained with the mini schedule's shape at factor x the profile's teacher
iterations ($PGD_MINI_TEACHER_ITERS), from the same pretrained backbone and data as the DAG's run, into
`<results>/mini/convergence/<run>_x<factor>/`, evaluated in the same job, and printed beside the DAG's own
metrics.json. Runs go two at a time (one torch thread each), as in the DAG. Outside the DAG: its runs feed no table.

    .venv/bin/python benchmarks/teacher_convergence.py --runs atss_r101_teacher fcos_r101_teacher

`--factor 1 --set KEY=VALUE --tag NAME` trains a variant of the recipe (e.g. another learning rate) at the DAG's
own length, into `<run>_x1_NAME/`, and prints it beside the DAG's run.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outside_dag import REPO, add_override_args, override_words, train_outside_dag  # noqa: E402


def profile_teacher_iters() -> int:
    from pgd.config import compose_config

    return int(compose_config('atss', 'r101', 'mini', 'teacher').train_cfg.max_iters)


def train(run: str, iters: int, results: Path, factor: float, extra: list[str] = (), tag: str = '') -> Path:
    return train_outside_dag(run, results / 'mini' / 'convergence' / f'{run}_x{factor:g}{tag}', results, extra,
                             env={'PGD_MINI_TEACHER_ITERS': str(iters)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', nargs='+', required=True, help='teacher run ids of the matrix')
    p.add_argument('--factor', type=float, default=1.5, help='schedule multiple (default %(default)s)')
    p.add_argument('--results', type=Path, default=REPO / 'results', help='the DAG\'s results root')
    p.add_argument('--jobs', type=int, default=2)
    add_override_args(p)
    a = p.parse_args(argv)
    extra, tag = override_words(p, a)
    base = profile_teacher_iters()
    iters = round(base * a.factor)
    with ThreadPoolExecutor(a.jobs) as pool:
        dirs = list(pool.map(lambda r: train(r, iters, a.results, a.factor, extra, tag), a.runs))
    print(f'teacher iterations: {base} (the DAG) vs {iters} (x{a.factor:g})'
          + (f'; the longer runs with {" ".join(a.sets)}' if a.sets else ''))
    for run, work in zip(a.runs, dirs):
        longer = json.loads((work / 'metrics.json').read_text())
        dag_file = a.results / 'mini' / 'runs' / run / 'metrics.json'
        dag = json.loads(dag_file.read_text()) if dag_file.is_file() else {}
        key = 'MR' if 'MR' in longer else 'AP'
        diff = longer[key] - dag[key] if key in dag else float('nan')
        better = -diff if key == 'MR' else diff          # MR: lower is better
        verdict = 'n/a: the DAG run is not done' if key not in dag else 'yes' if better < 1.5 else 'no'
        print(f'{run:28s} {key} {dag.get(key, float("nan")):6.1f} -> {longer[key]:6.1f}  ({diff:+.1f}; converged by '
              f'the 1.5-point rule: {verdict})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
