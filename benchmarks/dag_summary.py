"""Summarise a (possibly partial) mini DAG: per-run AP / MR, and job wall times from Snakemake's own log.

    .venv/bin/python benchmarks/dag_summary.py results/mini --snakemake-log .snakemake/log/<latest>.snakemake.log

Job time = Snakemake's "Finished jobid" timestamp minus the job's start stamp (1 s resolution; jobs that share a
machine run slower than alone); a run's job trains and then evaluates (`pgd train --eval`). Pretraining prints its
held-out accuracy; runs print their metrics.json; the last line is the wall time from the first job's start to the
last job's end.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from datetime import datetime
from pathlib import Path


def job_times(log: Path) -> dict[str, float]:
    """{'<rule>:<wildcards>': seconds} for every job the Snakemake log saw start and finish."""
    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
    started: dict[str, list] = {}
    seconds: dict[str, float] = {}
    span = [None, None]
    now, rule, job = None, None, None
    for line in log.read_text().splitlines():
        if m := stamp.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule, job = m.group(1), None
        elif rule and (m := re.match(r"^    jobid: (\d+)$", line)):
            job = m.group(1)
            started[job] = [f"{rule}:", now]
            span[0] = span[0] or now
        elif job and (m := re.match(r"^    wildcards: (.*)$", line)):
            started[job][0] += m.group(1)
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            if m.group(1) in started:
                name, start = started[m.group(1)]
                seconds[name] = (now - start).total_seconds()
                span[1] = now
    if span[0] and span[1]:
        seconds["(wall)"] = (span[1] - span[0]).total_seconds()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="results/<profile>")
    p.add_argument("--snakemake-log", type=Path, help="the run's .snakemake/log/*.snakemake.log")
    args = p.parse_args()
    times = job_times(args.snakemake_log) if args.snakemake_log else {}
    for ckpt in sorted((args.out / "pretrained").glob("*.pth")):
        info = json.loads(Path(str(ckpt) + ".json").read_text())
        job = times.get(f"pretrain_backbone:backbone={ckpt.stem}") or times.get(
            f"pretrain_backbone_r101:backbone={ckpt.stem}")
        print(f"pretrain {ckpt.stem:5s} acc {info['heldout_accuracy']:.3f}  job {job or 0:.0f} s")
    groups: dict[str, list[float]] = {}
    runs = sorted((args.out / "runs").iterdir()) if (args.out / "runs").is_dir() else []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        shown = {k: metrics[k] for k in ("AP", "AP50", "APs", "APm", "APl", "MR", "JI") if k in metrics}
        rule = "train_teacher" if run.name.endswith("_teacher") else "train_student"
        job_s = times.get(f"{rule}:run={run.name}")
        if job_s is not None:
            groups.setdefault(rule, []).append(job_s)
        cols = f"train+eval {job_s:5.0f} s" if job_s is not None else "train+eval     - "
        print(f"{run.name:32s} {cols}  {shown}")
    for kind, values in sorted(groups.items()):
        print(f"{kind}: {len(values)} jobs, mean {statistics.mean(values):.0f} s, total {sum(values) / 60:.1f} min")
    if times:
        wall = times.pop("(wall)", None)
        print(f"jobs finished: {len(times)}" + (f"; wall {wall / 60:.1f} min" if wall else ""))


if __name__ == "__main__":
    main()
