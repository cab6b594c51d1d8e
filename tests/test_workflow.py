"""The Snakemake DAG: `snakemake -n` lists exactly the jobs the experiment matrix implies, per rule and profile."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pgd.matrix import TABLES, load_matrix

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, results: Path, config=(), cwd=None, check=True):
    # Snakemake's working directory (its .snakemake/ state: locks, incomplete markers, caches) is the test's own,
    # not the checkout's, which a real run or another suite may be using at the same time
    cmd = SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd or results), *args]
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


def cached_teachers(m, runs):
    """Teacher runs whose outputs a mini student reads from a cache: those of the distilled runs, controls aside."""
    return {r.teacher for r in runs if r.method and r.method != "inherit"}


def expected_all(m, seeds, cache=False):
    n_teachers = len(m.teachers)
    n_students = sum(i.run.role == "student" for i in m.instances(seeds))
    coco_teachers = sum(r.dataset == "coco" for r in m.teachers)
    exp = dict(train_teacher=n_teachers, train_student=n_students,
               pilot_run=coco_teachers, heatmap=coco_teachers, figure=4, table=len(TABLES), report_page=1, all=1)
    if cache:
        exp["teacher_cache"] = len(cached_teachers(m, m))
    return exp


def test_mini_all(tmp_path, m):
    counts = dry(results=tmp_path)
    exp = expected_all(m, [0], cache=True)
    # mini pretrains r50 and mbv2, and r101 through its own higher-priority copy of the rule
    exp.update(data_coco=1, data_crowdhuman=1, pretrain_backbone=2, pretrain_backbone_r101=1)
    assert counts == Counter(exp)
    # 97 student rows; 13 of them at two more seeds (Table 1's ATSS block, FCOS's Student / Inherit only / Ours,
    # the code-norm PGD runs); caches of the 6 teachers and of the two plain students that teach Table 4
    assert (counts["train_teacher"], counts["train_student"], counts["teacher_cache"]) == (6, 97 + 26, 8)


def test_paper_all(tmp_path, m, paper_roots):
    counts = dry(results=tmp_path, config=paper_roots)
    # real data: no data jobs; students x 3 seeds. The "no inherit" rows of the five methods that never inherit
    # in the paper profile, and the code-normalisation PGD rows (the paper profile's default), compose to their
    # Table 1 runs: linked to them, not trained again (rule link_run)
    linked = 3 * (5 + 4)          # x 3 seeds: ATSS DeFeat FRS FGFI FKD + pgd_code, FCOS DeFeat FRS FKD + pgd_code
    exp = expected_all(m, [0, 1, 2])
    exp.update(train_student=exp["train_student"] - linked, link_run=linked)
    assert counts == Counter(exp)
    assert counts["train_student"] == 3 * 97 - linked and "teacher_cache" not in counts


def test_runs_that_compose_alike_train_once(m, paper_roots, monkeypatch):
    """Instances with equal digests: the first in matrix order trains, the others are exactly the ones that only
    restate a default (pgd.provenance drops the row's method_overrides as written)."""
    import collections

    from pgd.provenance import expected_digests

    roots = dict(kv.split("=", 1) for kv in paper_roots[:2])
    monkeypatch.setenv("PGD_COCO_ROOT", roots["coco_root"])
    monkeypatch.setenv("PGD_CROWDHUMAN_ROOT", roots["crowdhuman_root"])
    groups = collections.defaultdict(list)
    for name, e in expected_digests(m, [0], "paper").items():
        groups[e.digest].append(name)
    same = sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)
    # rows with seeds [0, 1, 2] pair up at every seed; the seed-0 pairs:
    same = [g for g in same if not any(n.endswith(("_s1", "_s2")) for n in g)]
    assert same == sorted([("atss_r50_defeat", "atss_r50_defeat_noinherit"), ("atss_r50_frs", "atss_r50_frs_noinherit"),
                           ("atss_r50_fgfi", "atss_r50_fgfi_noinherit"), ("atss_r50_fkd", "atss_r50_fkd_noinherit"),
                           ("atss_r50_pgd", "atss_r50_pgd_code"), ("fcos_r50_defeat", "fcos_r50_defeat_noinherit"),
                           ("fcos_r50_frs", "fcos_r50_frs_noinherit"), ("fcos_r50_fkd", "fcos_r50_fkd_noinherit"),
                           ("fcos_r50_pgd", "fcos_r50_pgd_code")])


@pytest.mark.parametrize("target,table", [("table5", "t5"), ("table3", "t3"), ("table6_alpha", "t6a"),
                                          ("table4", "t4")])
def test_named_table_rule_builds_only_what_it_needs(tmp_path, m, target, table):
    counts = dry(target, results=tmp_path)
    need = m.required_runs(table)
    cells = m.runs_for_table(table)
    datasets = {r.dataset for r in need}
    exp = Counter(train_teacher=sum(r.role == "teacher" for r in need),
                  train_student=sum(i.run.role == "student" for i in m.instances([0], need)),
                  teacher_cache=len(cached_teachers(m, need)),
                  table=1, **{target: 1})
    exp.update({"data_coco" if d == "coco" else "data_crowdhuman": 1 for d in datasets})
    backbones = {r.backbone for r in need}                      # one pretraining per backbone used
    exp.update(pretrain_backbone=len(backbones - {"r101"}), pretrain_backbone_r101=int("r101" in backbones))
    exp = +exp                                                   # drop zero counts
    assert counts == exp


def test_table5_counts_by_hand(tmp_path):
    # ATSS teacher + plain student and Ours (each at seeds 0-2, Table 1's ATSS block) + six strategies; each
    # training job also evaluates its run; one teacher cache
    assert dry("table5", results=tmp_path) == Counter(data_coco=1, pretrain_backbone=1, pretrain_backbone_r101=1,
                                                       train_teacher=1, teacher_cache=1,
                                                       train_student=3 + 3 + 6, table=1, table5=1)


def test_table6_and_pilot(tmp_path):
    assert dry("table6", results=tmp_path) == Counter(
        data_coco=1, pretrain_backbone=1, pretrain_backbone_r101=1, train_teacher=2, teacher_cache=2,
        train_student=(6 + 3) + 14, table=2, table6=1)   # K = 30 is atss_r50_pgd, at seeds 0-2
    assert dry("pilot", results=tmp_path) == Counter(data_coco=1, pretrain_backbone_r101=1, train_teacher=5,
                                                     pilot_run=5, figure=1, pilot=1)


def test_commands(tmp_path, paper_roots):
    """The shell lines: matrix row, seed, teacher dir, threads; torchrun with the job's GPUs at paper scale."""
    target = str(tmp_path / "mini" / "runs" / "atss_r50_pgd" / "model.pth")
    out = snakemake("-n", "-p", target, results=tmp_path).stdout
    line = next(ln for ln in out.splitlines() if "pgd.cli train" in ln and "--run atss_r50_pgd " in ln)
    assert f"--teacher-dir {tmp_path}/mini/runs/atss_r101_teacher" in line
    assert "--profile mini" in line and "--seed 0" in line and "--resume" in line and "PGD_THREADS=" in line
    assert f"--work-dir {tmp_path}/mini/runs/atss_r50_pgd " in line
    assert "pgd.cli train --eval" in line and "pgd.cli eval" not in line       # tested in the training process
    target = str(tmp_path / "paper" / "runs" / "atss_r50_pgd_s2" / "model.pth")
    out = snakemake("-n", "-p", target, results=tmp_path, config=paper_roots).stdout
    line = next(ln for ln in out.splitlines() if "--run atss_r50_pgd " in ln)
    assert "torch.distributed.run --standalone --nproc_per_node=8 -m pgd.cli train --launcher pytorch" in line
    assert "--seed 2" in line and f"--work-dir {tmp_path}/paper/runs/atss_r50_pgd_s2" in line
    assert f"--teacher-dir {tmp_path}/paper/runs/atss_r101_teacher " in line    # teachers: seed 0 only
    # torchrun's ranks do not test: one `pgd eval` process follows in the same job
    assert re.search(rf"&& .*pgd.cli eval --run-dir {tmp_path}/paper/runs/atss_r50_pgd_s2 ", line)


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed")
def test_slurm_profile_dry_run(tmp_path, paper_roots):
    out = snakemake("-n", "--workflow-profile", str(REPO / "workflow/profiles/slurm"), "table1",
                    results=tmp_path, config=paper_roots)
    text = out.stdout + out.stderr
    # Table 1: 28 distilled rows, 5 plain students and 5 Inherit-only controls, at the paper's seeds 0-2
    assert job_counts(text)["train_student"] == (28 + 5 + 5) * 3
    assert re.search(r"rule train_teacher:.*?resources:[^\n]*gpu=8[^\n]*nodes=1", text, re.S)


def test_teacher_iters_reaches_teacher_jobs_only(tmp_path, paper_roots):
    """`--config teacher_iters=N`: the teacher job's environment carries it (mini.py reads it), students and the
    default run do not; a bad value or a profile without iteration schedules is refused before any job runs."""
    target = str(tmp_path / "mini" / "runs" / "atss_r50_pgd" / "model.pth")
    out = snakemake("-n", "-p", "--forceall", target, results=tmp_path, config=["teacher_iters=1200"]).stdout
    lines = [ln for ln in out.splitlines() if "pgd.cli train" in ln]
    teacher = next(ln for ln in lines if "--run atss_r101_teacher " in ln)
    student = next(ln for ln in lines if "--run atss_r50_pgd " in ln)
    assert "PGD_MINI_TEACHER_ITERS=1200 " in teacher and "PGD_MINI_TEACHER_ITERS" not in student
    out = snakemake("-n", "-p", "--forceall", target, results=tmp_path).stdout
    assert "PGD_MINI_TEACHER_ITERS" not in out
    for bad, why in (("teacher_iters=0", "0 is less than the minimum of 1"),
                     ("teacher_iters=abc", "'abc' is not of type 'integer', 'null'")):
        p = snakemake("-n", target, results=tmp_path, config=[bad], check=False)   # the config schema refuses it
        assert p.returncode == 2 and f"snakemake: error: config key teacher_iters: {why}" in p.stderr
    p = snakemake("-n", results=tmp_path, config=[*paper_roots, "teacher_iters=1200"], check=False)
    assert p.returncode != 0 and "only the mini profile has iteration schedules" in p.stdout + p.stderr


def test_unknown_profile_is_a_clear_error(tmp_path):
    p = snakemake("-n", results=tmp_path, config=["profile=huge"], check=False)
    assert p.returncode != 0
    assert "profile 'huge'" in p.stdout + p.stderr


# ---------------------------------------------------------------------------------------------- end to end

E2E_RUNS = ("atss_r101_teacher", "atss_r50_student", "atss_r50_pgd", "atss_r50_pgd_box")


def _e2e_setup(tmp_path):
    """A four-run slice of the matrix (the ATSS teacher, student, PGD and PGD-Box runs: enough for every rule,
    every table - rows without runs show --, every figure and the report), tiny data and schedules."""
    import yaml

    with open(REPO / "configs" / "experiments.yaml") as f:
        rows = [r for r in yaml.safe_load(f)["runs"] if r["id"] in E2E_RUNS]
    for r in rows:          # one instance per row: the rules, not seed expansion (tests/test_matrix.py)
        r.pop("seeds", None)
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump({"runs": rows}))
    cfg = {
        "matrix": str(tmp_path / "matrix.yaml"),
        "results": str(tmp_path / "results"),
        "data": {"generate": True, "coco_args": "--seed 0 --num-train 8 --num-val 4 --image-size 64",
                 "crowdhuman_args": "--seed 0 --num-train 4 --num-val 2 --image-size 64"},
        # 6 iterations with a checkpoint after each: the kill below lands between two of them
        # (two kept, so that a run writes ~1 GB, not 2.5: pgd train refuses to start on a disk too full for it)
        # (+: the mini students' checkpoint hook has no max_keep_ckpts of its own)
        "train_args": "--set train_cfg.max_iters=6 --set default_hooks.checkpoint.interval=1 "
                      "--set +default_hooks.checkpoint.max_keep_ckpts=2",
        "pretrain_args": "--iters 1 --eval-images 8",
        "figures": {"samples": 2},
        # one torch thread per job so that two jobs share the two cores of a small machine
        "resources": {"train_teacher": {"threads": 1}, "train_student": {"threads": 1}},
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "results" / "mini"


def _failed_job_logs(out: Path, chars: int = 3000) -> str:
    """The ends of the job logs that hold a traceback: snakemake's own output names a failed job but not why."""
    texts = {log: log.read_text(errors="replace") for log in sorted(out.glob("logs/**/*.log"))}
    tails = [f"--- {log.relative_to(out)}\n{text[-chars:]}" for log, text in texts.items() if "Traceback" in text]
    return "\n".join(tails) or "(no job log holds a traceback)"


def _pgd_status(tmp_path, train_args, env):
    """`pgd status` of a test's results tree and matrix: the process and each run's state by name."""
    status = subprocess.run([sys.executable, "-m", "pgd.cli", "status", "--directory", str(tmp_path), "--config",
                             f"results={tmp_path / 'results'}", f"matrix={tmp_path / 'matrix.yaml'}",
                             f"train_args={train_args}"], capture_output=True, text=True, env=env, timeout=300)
    return status, dict(line.split()[:2] for line in status.stdout.splitlines()[:-1])


def _e2e_cmd(tmp_path, *extra):
    return SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                        "--configfile", str(tmp_path / "test.yaml"), "--cores", "2", "--rerun-incomplete",
                        *extra, "report"]


@pytest.mark.slow
def test_end_to_end_with_interrupted_training(tmp_path):
    import signal
    import time

    out = _e2e_setup(tmp_path)
    victim = out / "runs" / "atss_r50_pgd_box"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(_e2e_cmd(tmp_path), stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    try:
        deadline = time.time() + 900
        while not (victim / "last_checkpoint").exists():     # the distilled student has saved an iteration
            assert first.poll() is None, ((tmp_path / "first.log").read_text()[-3000:] + "\n"
                                          + _failed_job_logs(out))
            assert time.time() < deadline, "the distilled run never reached its first checkpoint"
            time.sleep(0.5)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)              # snakemake and its training job, mid-run
        first.wait()
    assert not (victim / "model.pth").exists()               # nothing half-written under the final name
    done_before = sorted(p.name for p in victim.glob("iter_*.pth"))
    assert done_before

    subprocess.run(SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                                "--configfile", str(tmp_path / "test.yaml"), "--unlock"],
                   check=True, capture_output=True, env=env, timeout=120)
    second = subprocess.run(_e2e_cmd(tmp_path), capture_output=True, text=True, env=env, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:] + _failed_job_logs(out)

    # the rerun resumed from the checkpoint the killed job left, and finished the schedule
    train_log = (out / "logs" / "train" / "atss_r50_pgd_box.log").read_text()
    assert "resumed" in train_log.lower(), train_log[-2000:]
    assert (victim / "model.pth").is_file()
    assert not list(victim.glob("iter_*.pth"))   # a finished run's resume checkpoints are deleted (keep_checkpoints)
    rerun = job_counts(second.stdout + second.stderr)
    assert rerun["train_teacher"] == 0 and 1 <= rerun["train_student"] <= 2      # only what was unfinished
    assert rerun["report_page"] == 1            # (tables whose runs had finished may predate the kill)

    for name in E2E_RUNS:
        metrics = json.loads((out / "runs" / name / "metrics.json").read_text())
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)
    tex = (out / "tables" / "table5.tex").read_text()
    assert r"\toprule" in tex and "Box & " in tex and r"\label{tab:table5-paper}" in tex
    csv = (out / "tables" / "table5.csv").read_text()
    assert "atss_r50_pgd_box" in csv
    for n in (1, 2, 3, 5):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"fig{n}.{ext}").stat().st_size > 1000
    assert (out / "runs" / "atss_r101_teacher" / "pilot.csv").is_file()
    page = (out / "report.md").read_text()
    assert page.count("```latex") == len(TABLES) and "![Fig. 5:" in page and "PGDLoss(" in page
    # the distilled runs read their teacher from the cache the teacher_cache rule built
    assert (out / "runs" / "atss_r101_teacher" / "teacher_cache.pt").is_file()
    assert "teacher_cache" in (out / "runs" / "atss_r50_pgd" / "config.py").read_text()
    assert "## Provenance" in page and "are stale" not in page

    # every run records the digest the workflow expects (so tables and `pgd status` see it as done)
    from pgd.provenance import Settings, expected_digests

    settings = yaml.safe_load((tmp_path / "test.yaml").read_text())
    expected = expected_digests(load_matrix(tmp_path / "matrix.yaml"), [0], "mini",
                                Settings(train_args=settings["train_args"]))
    for name in E2E_RUNS:
        metrics = json.loads((out / "runs" / name / "metrics.json").read_text())
        assert metrics["provenance"]["digest"] == expected[name].digest, name
    status, states = _pgd_status(tmp_path, settings["train_args"], env)
    assert status.returncode == 0 and all(states[name] == "done" for name in E2E_RUNS), status.stdout


@pytest.mark.slow   # ~2 min: tiny data, 1-iteration pretraining, 4-iteration trainings
def test_extras_target_trains_and_tabulates_the_extra_methods(tmp_path):
    """`snakemake extras`: PKD (a configs/distill method no matrix row uses) trains on ATSS beside the matrix's
    teacher, student, Inherit-only control and PGD runs, and tables/extras.* shows all five; the default target
    does not include it."""
    cfg = {"results": str(tmp_path / "results"),
           "data": {"generate": True, "coco_args": "--seed 0 --num-train 8 --num-val 4 --image-size 64",
                    "crowdhuman_args": "--seed 0 --num-train 4 --num-val 2 --image-size 64"},
           "train_args": "--set train_cfg.max_iters=4", "pretrain_args": "--iters 1 --eval-images 8",
           "resources": {"train_teacher": {"threads": 1}, "train_student": {"threads": 1}}}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg))
    cmd = SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                       str(tmp_path / "test.yaml"), "--cores", "2", "extras"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    out = tmp_path / "results" / "mini"
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:] + _failed_job_logs(out)
    rows = {line.split(",")[2] for line in (out / "tables" / "extras.csv").read_text().splitlines()[1:]}
    assert rows == {"Teacher", "Student", "Inherit only", "PGD", "PKD"}
    assert "loss_pkd" in (out / "logs" / "train" / "atss_r50_pkd.log").read_text()
    (tmp_path / "other").mkdir()
    assert "atss_r50_pkd" not in snakemake("-n", results=tmp_path / "other").stdout    # not part of `all`


@pytest.mark.slow   # ~1 min: tiny data, 1-iteration pretraining, one 4-iteration training
def test_a_run_that_composes_alike_is_linked_not_trained(tmp_path):
    """Two matrix rows that compose to the same recipe (here a copy of the plain ATSS student under another id):
    one training job, the copy's run dir a link to it, its metrics and provenance read under its own name, and
    `pgd status` calls both done."""
    from pgd.provenance import Settings, expected_digests

    with open(REPO / "configs" / "experiments.yaml") as f:
        row = next(r for r in yaml.safe_load(f)["runs"] if r["id"] == "atss_r50_student")
    row.pop("seeds", None)
    copy = {**row, "id": "atss_r50_student_copy", "cells": [{"table": "t1", "block": "ATSS", "row": "Inherit only"}]}
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump({"runs": [row, copy]}))
    train_args = "--set train_cfg.max_iters=4"
    cfg = {"matrix": str(tmp_path / "matrix.yaml"), "results": str(tmp_path / "results"),
           "data": {"generate": True, "coco_args": "--seed 0 --num-train 8 --num-val 4 --image-size 64",
                    "crowdhuman_args": "--seed 0 --num-train 4 --num-val 2 --image-size 64"},
           "train_args": train_args, "pretrain_args": "--iters 1 --eval-images 8",
           "resources": {"train_student": {"threads": 1}}}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results" / "mini"
    targets = [str(out / "runs" / n / "metrics.json") for n in ("atss_r50_student", "atss_r50_student_copy")]
    cmd = SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                       str(tmp_path / "test.yaml"), "--cores", "2", *targets]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:] + _failed_job_logs(out)
    counts = job_counts(p.stdout + p.stderr)
    assert (counts["train_student"], counts["link_run"]) == (1, 1)
    link = out / "runs" / "atss_r50_student_copy"
    assert link.is_symlink() and os.readlink(link) == "atss_r50_student"
    assert not (out / "logs" / "train" / "atss_r50_student_copy.log").exists()
    expected = expected_digests(load_matrix(tmp_path / "matrix.yaml"), [0], "mini", Settings(train_args=train_args))
    assert expected["atss_r50_student"].digest == expected["atss_r50_student_copy"].digest
    assert json.loads((link / "metrics.json").read_text())["provenance"]["digest"] == expected[
        "atss_r50_student_copy"].digest
    again = subprocess.run(cmd + ["-n"], capture_output=True, text=True, timeout=600, env=env)
    assert "Nothing to be done" in again.stdout + again.stderr
    status, states = _pgd_status(tmp_path, train_args, env)
    assert states["atss_r50_student"] == states["atss_r50_student_copy"] == "done", status.stdout
