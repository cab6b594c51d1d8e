"""Summarise a (possibly partial) mini DAG: per-run AP / MR and job wall times, read off its results folder.

    .venv/bin/python benchmarks/dag_summary.py results/mini

Job time = last write of the job's output minus the first write of its log (Snakemake creates the log when the job
starts). Pretraining prints its held-out accuracy; runs print their metrics.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def job_seconds(log: Path, output: Path) -> float | None:
    if not (log.is_file() and output.is_file()):
        return None
    return output.stat().st_mtime - log.stat().st_ctime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="results/<profile>")
    args = p.parse_args()
    out, logs = args.out, args.out / "logs"
    for ckpt in sorted((out / "pretrained").glob("*.pth")):
        info = json.loads(Path(str(ckpt) + ".json").read_text())
        print(f"pretrain {ckpt.stem:5s} acc {info['heldout_accuracy']:.3f}  {info['train_seconds']:.0f} s train")
    groups: dict[str, list[float]] = {}
    for run in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
        train_s = job_seconds(logs / "train" / f"{run.name}.log", run / "model.pth")
        eval_s = job_seconds(logs / "eval" / f"{run.name}.log", run / "metrics.json")
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        shown = {k: metrics[k] for k in ("AP", "AP50", "APs", "APm", "APl", "MR", "JI") if k in metrics}
        kind = "teacher" if run.name.endswith("_teacher") else "student"
        if train_s is not None:
            groups.setdefault(kind, []).append(train_s)
        if eval_s is not None:
            groups.setdefault("eval", []).append(eval_s)
        times = f"train {train_s:5.0f} s" if train_s is not None else "train   -  "
        times += f"  eval {eval_s:4.0f} s" if eval_s is not None else "  eval   - "
        print(f"{run.name:32s} {times}  {shown}")
    for kind, values in groups.items():
        print(f"{kind}: {len(values)} jobs, mean {statistics.mean(values):.0f} s, total {sum(values) / 60:.1f} min")


if __name__ == "__main__":
    main()
