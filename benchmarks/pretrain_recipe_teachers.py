"""Teacher AP per backbone-pretraining recipe (mini profile, CPU): the numbers behind docs/mini-profile.md,
"Pretraining at lr 5e-3".

For each recipe (lr, warm-up, iterations) it pretrains the backbone once with `pgd pretrain` (skipped when the
checkpoint is already there), then trains and evaluates each listed teacher run of the matrix from it with
`pgd train --eval`, two jobs at a time with one torch thread each, as the DAG runs them. It prints one row per
(recipe, run): held-out accuracy, pretraining seconds and the run's metrics.

    .venv/bin/python benchmarks/pretrain_recipe_teachers.py --out results/recipes \\
        --recipes 0.002:75:1500 0.005:200:1500 --runs atss_r101_teacher gfl_r101_teacher
    # CrowdHuman teachers need the crowd set's root:
    .venv/bin/python benchmarks/pretrain_recipe_teachers.py --out results/recipes --recipes 0.005:200:1500 \\
        --runs ddod_r101_crowd_teacher

A 600-iteration R101 teacher takes ~11 min and a 1500-iteration R101 pretraining ~25 min on a 2-core machine of
0.52 s/it in benchmarks/detector_speed.py.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_recipe(text: str) -> tuple[float, int, int]:
    try:
        lr, warmup, iters = text.split(":")
        return float(lr), int(warmup), int(iters)
    except ValueError:
        raise argparse.ArgumentTypeError(f"recipe must be LR:WARMUP_ITERS:ITERS, e.g. 0.005:200:1500 (got {text!r})")


def recipe_dir(out: Path, recipe: tuple[float, int, int]) -> Path:
    lr, warmup, iters = recipe
    return out / f"lr{lr:g}_w{warmup}_it{iters}"


def run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode:
            raise SystemExit(f"failed: {' '.join(cmd)} (log: {log})")


def pretrain(out: Path, recipe: tuple[float, int, int], backbone: str) -> dict:
    ckpt = recipe_dir(out, recipe) / f"{backbone}.pth"
    if not Path(str(ckpt) + ".json").exists():
        lr, warmup, iters = recipe
        run([sys.executable, "-m", "pgd.cli", "pretrain", "--backbone", backbone, "--out", str(ckpt), "--lr", str(lr),
             "--warmup-iters", str(warmup), "--iters", str(iters), "--threads", "1", "--no-mlflow"],
            ckpt.with_suffix(".log"))
    return json.loads(Path(str(ckpt) + ".json").read_text())


def train(out: Path, recipe: tuple[float, int, int], run_id: str, data_root: str) -> dict:
    work = recipe_dir(out, recipe) / run_id
    if not (work / "metrics.json").exists():
        run([sys.executable, "-m", "pgd.cli", "train", "--run", run_id, "--eval", "--no-mlflow", "--threads", "1",
             "--seed", "0", "--work-dir", str(work), "--set", f"data_root={data_root}",
             "--set", f"pretrained_dir={recipe_dir(out, recipe)}"], work.with_suffix(".log"))
    return json.loads((work / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--recipes", nargs="+", type=parse_recipe, default=[parse_recipe("0.005:200:1500")],
                   help="LR:WARMUP_ITERS:ITERS of `pgd pretrain`")
    p.add_argument("--runs", nargs="+", default=["atss_r101_teacher"], help="teacher run ids of the matrix")
    p.add_argument("--backbone", default="r101")
    p.add_argument("--coco-root", default="results/data/synth_coco/")
    p.add_argument("--crowd-root", default="results/data/synth_crowd/")
    args = p.parse_args()
    out = args.out.resolve()
    roots = {run_id: str(Path(args.crowd_root if "crowd" in run_id else args.coco_root).resolve()) + "/"
             for run_id in args.runs}
    with ThreadPoolExecutor(2) as pool:
        summaries = dict(zip(args.recipes, pool.map(lambda r: pretrain(out, r, args.backbone), args.recipes)))
        jobs = [(r, run_id) for r in args.recipes for run_id in args.runs]
        metrics = list(pool.map(lambda job: train(out, job[0], job[1], roots[job[1]]), jobs))
    print(f"{'recipe (lr:warm-up:iters)':26} {'acc':>6} {'pretrain s':>10}  run: metrics")
    for (recipe, run_id), m in zip(jobs, metrics):
        s = summaries[recipe]
        shown = {k: v for k, v in m.items() if k in ("AP", "AP50", "APl", "MR", "JI")}
        print(f"{':'.join(map(str, recipe)):26} {s['heldout_accuracy']:6.3f} {s['train_seconds']:10.0f}  "
              f"{run_id}: {shown}")


if __name__ == "__main__":
    main()
