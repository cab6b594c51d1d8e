"""The Snakemake DAG: `snakemake -n` lists exactly the jobs the experiment matrix implies, per rule and profile."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pgd.matrix import load_matrix

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, results: Path, config=(), cwd=REPO, check=True):
    cmd = SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd), *args]
    # one --config (a second one would replace the first), last so that targets in args stay targets
    cmd += ["--config", f"results={results}", *config]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def job_counts(output: str) -> Counter:
    """Parse the 'Job stats' table of a dry run (job / count lines up to 'total')."""
    m = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    assert m, f"no job stats in:\n{output[-2000:]}"
    counts = Counter({name: int(n) for name, n in (ln.split() for ln in m.group(1).splitlines())})
    assert sum(counts.values()) == int(m.group(2))
    return counts


def dry(*targets, results, config=()):
    p = snakemake("-n", *targets, "--quiet", "rules", results=results, config=config)
    return job_counts(p.stdout + p.stderr)


@pytest.fixture(scope="module")
def m():
    return load_matrix()


@pytest.fixture(scope="module")
def paper_roots(tmp_path_factory):
    """Empty stand-ins for the real datasets (a dry run only checks that the inputs exist)."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "coco" / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "coco" / "annotations" / f"instances_{split}2017.json").write_text("{}")
        (root / "crowd").mkdir(exist_ok=True)
        (root / "crowd" / f"annotation_{split}.odgt").write_text("")
    return [f"coco_root={root / 'coco'}", f"crowdhuman_root={root / 'crowd'}", "profile=paper"]


def expected_all(m, seeds):
    n_teachers = len(m.teachers)
    n_students = len(m.students) * len(seeds)
    coco_teachers = sum(r.dataset == "coco" for r in m.teachers)
    return dict(train_teacher=n_teachers, train_student=n_students, eval=n_teachers + n_students,
                pilot_run=coco_teachers, heatmap=coco_teachers, figure=4, table=8, report_page=1, all=1)


def test_mini_all(tmp_path, m):
    counts = dry(results=tmp_path)
    exp = expected_all(m, [0])
    exp.update(data_coco=1, data_crowdhuman=1)
    assert counts == Counter(exp)
    assert (counts["train_teacher"], counts["train_student"]) == (6, 79)


def test_paper_all(tmp_path, m, paper_roots):
    counts = dry(results=tmp_path, config=paper_roots)
    assert counts == Counter(expected_all(m, [0, 1, 2]))       # real data: no data jobs; students x 3 seeds
    assert counts["train_student"] == 237


@pytest.mark.parametrize("target,table", [("table5", "t5"), ("table3", "t3"), ("table6_alpha", "t6a"),
                                          ("table4", "t4")])
def test_named_table_rule_builds_only_what_it_needs(tmp_path, m, target, table):
    counts = dry(target, results=tmp_path)
    need = m.required_runs(table)
    cells = m.runs_for_table(table)
    datasets = {r.dataset for r in need}
    exp = Counter(train_teacher=sum(r.role == "teacher" for r in need),
                  train_student=sum(r.role == "student" for r in need),
                  eval=len(cells), table=1, **{target: 1})
    exp.update({"data_coco" if d == "coco" else "data_crowdhuman": 1 for d in datasets})
    assert counts == exp


def test_table5_counts_by_hand(tmp_path):
    # ATSS teacher + plain student + Ours + six strategies; nine cells evaluated
    assert dry("table5", results=tmp_path) == Counter(data_coco=1, train_teacher=1, train_student=8, eval=9,
                                                       table=1, table5=1)


def test_table6_and_pilot(tmp_path):
    assert dry("table6", results=tmp_path) == Counter(
        data_coco=1, train_teacher=2, train_student=7 + 14, eval=7 + 14, table=2, table6=1)
    assert dry("pilot", results=tmp_path) == Counter(data_coco=1, train_teacher=5, pilot_run=5, figure=1, pilot=1)


def test_commands(tmp_path, paper_roots):
    """The shell lines: matrix row, seed, teacher dir, threads; torchrun with the job's GPUs at paper scale."""
    target = str(tmp_path / "mini" / "runs" / "atss_r50_pgd" / "model.pth")
    out = snakemake("-n", "-p", target, results=tmp_path).stdout
    line = next(ln for ln in out.splitlines() if "pgd.cli train" in ln and "--run atss_r50_pgd " in ln)
    assert f"--teacher-dir {tmp_path}/mini/runs/atss_r101_teacher" in line
    assert "--profile mini" in line and "--seed 0" in line and "--resume" in line and "PGD_THREADS=" in line
    assert f"--work-dir {tmp_path}/mini/runs/atss_r50_pgd " in line
    target = str(tmp_path / "paper" / "runs" / "atss_r50_pgd_s2" / "model.pth")
    out = snakemake("-n", "-p", target, results=tmp_path, config=paper_roots).stdout
    line = next(ln for ln in out.splitlines() if "--run atss_r50_pgd " in ln)
    assert "torch.distributed.run --standalone --nproc_per_node=8 -m pgd.cli train --launcher pytorch" in line
    assert "--seed 2" in line and f"--work-dir {tmp_path}/paper/runs/atss_r50_pgd_s2" in line
    assert f"--teacher-dir {tmp_path}/paper/runs/atss_r101_teacher " in line    # teachers: seed 0 only


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed")
def test_slurm_profile_dry_run(tmp_path, paper_roots):
    out = snakemake("-n", "--workflow-profile", str(REPO / "workflow/profiles/slurm"), "table1",
                    results=tmp_path, config=paper_roots)
    text = out.stdout + out.stderr
    assert job_counts(text)["train_student"] == 28 * 3 + 5 * 3
    assert re.search(r"rule train_teacher:.*?resources:[^\n]*gpu=8[^\n]*nodes=1", text, re.S)


def test_unknown_profile_is_a_clear_error(tmp_path):
    p = snakemake("-n", results=tmp_path, config=["profile=huge"], check=False)
    assert p.returncode != 0
    assert "profile 'huge'" in p.stdout + p.stderr
