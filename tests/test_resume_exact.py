"""Exact resume: a mini-profile training SIGKILLed after a random iteration and resumed with `pgd train --resume`
ends bit for bit where the uninterrupted run of the same seed ends: the same weights in model.pth, the same logged
losses at every iteration, the same metrics.json. For the R101 teacher (multi-scale resize and flip, checkpoints
every quarter run in the mini profile) and the PGD student distilled from it, reading the teacher's cached outputs
(checkpoints forced on here: mini students keep none). docs/pipeline.md says why mmengine's resume is exact here."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
# 8 training images at batch 4: the dataloader restarts (a new sampler epoch) every 2 iterations
ITERS, INTERVAL = 6, 2
TEACHER, STUDENT = "atss_r101_teacher", "atss_r50_pgd"
# keys of a logged iteration that depend on the clock, not on the training
TIMING_KEYS = {"time", "data_time", "eta"}


def _env() -> dict[str, str]:
    return {**os.environ, "PGD_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train_cmd(root: Path, run: str, work_dir: Path, *extra: str) -> list[str]:
    return ["--run", run, "--profile", "mini", "--work-dir", str(work_dir), "--no-mlflow", "--eval",
            "--set", f"data_root={root / 'data'}", "--set", f"train_cfg.max_iters={ITERS}",
            "--set", f"default_hooks.checkpoint.interval={INTERVAL}",
            "--set", "+default_hooks.checkpoint.max_keep_ckpts=2",   # as the teachers: less disk (+: new for students)
            "--set", "default_hooks.logger.interval=1",
            # every iteration's scalars in <session>/vis_data/scalars.json, full precision
            "--set", "visualizer.vis_backends=[{'type': 'LocalVisBackend'}]", *extra]


def _start(root: Path, args: list[str], log: Path, kill_after: int | None = None) -> subprocess.Popen:
    prefix = ([str(TESTS / "sigkill_train.py"), str(kill_after)] if kill_after is not None
              else ["-m", "pgd.cli", "train"])
    return subprocess.Popen([sys.executable, *prefix, *args], cwd=root, env=_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path, expect: int) -> str:
    proc.wait(timeout=900)
    text = log.read_text(errors="replace")
    assert proc.returncode == expect, f"exit {proc.returncode}, expected {expect}:\n{text[-4000:]}"
    return text


def _scalars(work_dir: Path) -> dict[int, dict]:
    """Logged iterations of every Runner session of a run dir, by step; a step logged twice (before the kill and
    again after the resume) must carry the same numbers both times."""
    out: dict[int, dict] = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            rec = {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            if "loss" not in rec:
                continue
            assert out.setdefault(rec["step"], rec) == rec, (path, rec, out[rec["step"]])
    return out


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    from pgd.checkpoint import load_checkpoint

    return load_checkpoint(path)["state_dict"]


def _interrupt_and_compare(root: Path, run: str, *extra: str) -> int:
    """Train `run` uninterrupted and, beside it, SIGKILLed after a random iteration then resumed; assert that both
    end identically. Returns the iteration of the kill."""
    kill = random.randint(1, ITERS - 1)
    ref, cut = root / "runs" / f"{run}_ref", root / "runs" / f"{run}_cut"
    # the two runs share the machine's two cores (one thread each); their results do not depend on it
    ref_proc = _start(root, _train_cmd(root, run, ref, *extra), root / f"{run}_ref.log")
    cut_proc = _start(root, _train_cmd(root, run, cut, *extra), root / f"{run}_cut.log", kill_after=kill)
    _wait(cut_proc, root / f"{run}_cut.log", -signal.SIGKILL)
    why = f"{run} killed after iteration {kill}"
    assert not (cut / "model.pth").exists(), why
    saved = kill // INTERVAL * INTERVAL        # the checkpoint the resume starts from (0: none, from scratch)
    assert (cut / f"iter_{saved}.pth").is_file() if saved else not list(cut.glob("iter_*.pth")), why
    resumed = _wait(_start(root, _train_cmd(root, run, cut, "--resume", *extra), root / f"{run}_resumed.log"),
                    root / f"{run}_resumed.log", 0)
    _wait(ref_proc, root / f"{run}_ref.log", 0)
    if saved:
        assert f"Advance dataloader {saved} steps" in resumed, why + "\n" + resumed[-3000:]
    print(f"{why}, resumed from iteration {saved}")      # shown by pytest -rP

    ref_sd, cut_sd = _state_dict(ref / "model.pth"), _state_dict(cut / "model.pth")
    assert set(ref_sd) == set(cut_sd), why
    differ = [k for k in ref_sd if not torch.equal(ref_sd[k], cut_sd[k])]
    assert not differ, f"{why}: {len(differ)} of {len(ref_sd)} tensors differ, e.g. {differ[:3]}"
    ref_log, cut_log = _scalars(ref), _scalars(cut)
    assert sorted(ref_log) == list(range(1, ITERS + 1)) == sorted(cut_log), why
    for step in ref_log:
        assert cut_log[step] == ref_log[step], f"{why}: iteration {step}"
    ref_metrics = json.loads((ref / "metrics.json").read_text())
    assert json.loads((cut / "metrics.json").read_text()) == ref_metrics, why
    assert ref_metrics["AP50"] is not None
    return kill


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    subprocess.run([sys.executable, "-m", "pgd.cli", "data", "coco", "--out", "data", "--num-train", "8",
                    "--num-val", "4", "--seed", "0"], cwd=root, env=_env(), check=True, capture_output=True,
                   timeout=300)
    return root


def test_teacher_resumes_exactly(root):
    _interrupt_and_compare(root, TEACHER)


def test_distilled_student_resumes_exactly(root):
    teacher = root / "runs" / f"{TEACHER}_ref"
    if not (teacher / "model.pth").is_file():       # run alone: train the teacher it distils from
        _interrupt_and_compare(root, TEACHER)
    if not (teacher / "teacher_cache.pt").is_file():    # mini students read the teacher's outputs from its cache
        subprocess.run([sys.executable, "-m", "pgd.cli", "teacher-cache", "--teacher-dir", str(teacher),
                        "--set", f"data_root={root / 'data'}"], cwd=root, env=_env(), check=True,
                       capture_output=True, timeout=600)
    _interrupt_and_compare(root, STUDENT, "--teacher-dir", str(teacher))
