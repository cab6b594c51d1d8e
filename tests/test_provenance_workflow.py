"""A configuration edit reruns exactly the runs it changes (and what depends on them); an unrelated edit reruns
nothing. On a results tree Snakemake considers complete (`--touch --forceall` over stand-in outputs), no training."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROWS = ("atss_r101_teacher", "gfl_r101_teacher", "atss_r50_student", "atss_r50_fgd", "atss_r50_pgd", "gfl_r50_pgd",
        "atss_r50_pgd_alpha0.05")
DISTILLED_FROM_ATSS = {"atss_r50_fgd", "atss_r50_pgd", "atss_r50_pgd_alpha0.05"}


class Tree:
    def __init__(self, root: Path):
        self.root = root
        self.matrix = root / "matrix.yaml"
        self.configs = root / "configs"
        self.results = root / "results"

    def snakemake(self, *args, config=()):
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(self.root), *args, "--config", f"results={self.results}", f"matrix={self.matrix}", *config]
        env = {**os.environ, "PGD_CONFIG_ROOT": str(self.configs), "PYTHONWARNINGS": "ignore"}
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, f"snakemake failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout + p.stderr

    def scheduled(self, config=()) -> dict[str, set[str]]:
        """rule -> the run names (or output stems) a dry run would execute."""
        out = self.snakemake("-n", config=config)
        jobs: dict[str, set[str]] = {}
        for block in re.split(r"\n(?=rule \w+:)", out)[1:]:
            rule = re.match(r"rule (\w+):", block).group(1)
            wc = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(rule, set()).add(wc.group(1).split("=", 1)[1] if wc else rule)
        return jobs

    def training(self, config=()) -> set[str]:
        jobs = self.scheduled(config)
        return jobs.get("train_teacher", set()) | jobs.get("train_student", set())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A seven-run slice of the matrix with every output present and recorded by Snakemake, and its own copy of
    configs/ (PGD_CONFIG_ROOT) that the tests edit."""
    root = tmp_path_factory.mktemp("provenance")
    t = Tree(root)
    rows = [r for r in yaml.safe_load((REPO / "configs" / "experiments.yaml").read_text())["runs"] if r["id"] in ROWS]
    assert {r["id"] for r in rows} == set(ROWS)
    for r in rows:   # one instance per row: what reruns is the question here, not seed expansion (test_matrix)
        r.pop("seeds", None)
    t.matrix.write_text(yaml.safe_dump({"runs": rows}, sort_keys=False))
    shutil.copytree(REPO / "configs", t.configs)
    summary = t.snakemake("-n", "--summary")
    for line in summary.splitlines():
        path = line.split("\t")[0]
        if path.startswith(str(t.results)):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch()
    t.snakemake("--touch", "--forceall", "--cores", "1")
    assert "Nothing to be done" in t.snakemake("-n")
    return t


@contextlib.contextmanager
def edited(path: Path, old: str, new: str):
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))
    try:
        yield
    finally:
        path.write_text(text)


def test_matrix_override_reruns_that_run_and_its_table(tree):
    with edited(tree.matrix, "alpha: 0.05", "alpha: 0.06"):
        jobs = tree.scheduled()
    assert jobs["train_student"] == {"atss_r50_pgd_alpha0.05"} and "train_teacher" not in jobs
    assert jobs["table"] == {"table6_alpha"} and "report_page" in jobs


def test_method_config_value_reruns_its_method_only(tree):
    fgd = tree.configs / "distill" / "fgd.py"
    value = re.search(r"alpha_fg=([0-9.e-]+)", fgd.read_text()).group(0)
    with edited(fgd, value, value + "1"):
        jobs = tree.scheduled()
    assert jobs["train_student"] == {"atss_r50_fgd"} and jobs["table"] == {"table1", "table1_init"}


def test_comments_and_unrelated_edits_rerun_nothing(tree):
    fgd = tree.configs / "distill" / "fgd.py"
    with edited(fgd, "distill = dict(", "# a comment\n_unused_helper = 1\ndistill = dict("), \
            edited(tree.matrix, "id: gfl_r50_pgd", "note: a note, not a setting\n  id: gfl_r50_pgd"):
        assert "Nothing to be done" in tree.snakemake("-n")
    readme = tree.root / "README.md"
    readme.write_text("docs change")
    assert "Nothing to be done" in tree.snakemake("-n")


def test_profile_key_reruns_the_runs_it_reaches(tree):
    mini = tree.configs / "profiles" / "mini.py"
    with edited(mini, "_student_iters = 1350", "_student_iters = 1351"):
        assert tree.training() == set(ROWS) - {"atss_r101_teacher", "gfl_r101_teacher"}


def test_pretraining_recipe_retrains_backbones_and_everything_after(tree):
    mini = tree.configs / "profiles" / "mini.py"
    with edited(mini, "lr=0.005, weight_decay=0.05", "lr=0.004, weight_decay=0.05"):
        jobs = tree.scheduled()
    assert {"pretrain_backbone", "pretrain_backbone_r101"} <= set(jobs)
    assert jobs["train_teacher"] | jobs["train_student"] == set(ROWS)


def test_teacher_change_reruns_teacher_and_its_students(tree):
    assert tree.training(config=["teacher_iters=1200"]) == {"atss_r101_teacher", "gfl_r101_teacher",
                                                            "gfl_r50_pgd"} | DISTILLED_FROM_ATSS
    # a teacher's own row: a different detector config for the ATSS teacher (its R101 file) reaches its three
    # students through their teacher's digest, not the plain student or the GFL runs
    r101 = tree.configs / "detectors" / "atss_r101.py"
    with edited(r101, "depth=101", "depth=101, dcn=None"):
        assert tree.training() == {"atss_r101_teacher"} | DISTILLED_FROM_ATSS
