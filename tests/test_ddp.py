"""`pgd train --launcher pytorch` under torchrun: 2 CPU processes (gloo) train, checkpoint and resume."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import make_coco, tiny_config_text

from pgd.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def _torchrun(tmp: Path, config: Path, work_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pgd.cli", "train", "--launcher", "pytorch", "--config", str(config), "--work-dir", str(work_dir),
           "--no-mlflow", "--threads", "1", "--set", "log_level='INFO'", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def test_torchrun_two_cpu_processes_train_checkpoint_and_resume(tmp_path):
    data = make_coco(tmp_path / "data", num_train=8, num_val=2)
    config = tmp_path / "tiny.py"
    config.write_text(tiny_config_text(data, max_iters=4, interval=2, batch=2))
    work_dir = tmp_path / "run"

    first = _torchrun(tmp_path, config, work_dir)
    assert first.stdout.count("pgd train: wrote") == 1  # rank 0 alone writes model.pth
    logs = "\n".join(p.read_text() for p in work_dir.glob("*/*.log"))
    assert "Distributed training: True" in logs and "GPU number: 2" in logs
    assert "dist_cfg: {'backend': 'gloo'}" in logs  # the runtime environment mmengine reports

    model = load_checkpoint(work_dir / "model.pth")  # weights_only=True with pgd.checkpoint's allow-list
    assert model["meta"]["iter"] == 4
    assert not any(k.startswith("module.") for k in model["state_dict"])  # the DDP wrapper is unwrapped
    ckpt4 = load_checkpoint(work_dir / "iter_4.pth")
    assert ckpt4["meta"]["iter"] == 4 and "message_hub" in ckpt4

    _torchrun(tmp_path, config, work_dir, "--resume", "--set", "train_cfg.max_iters=6")
    logs = "\n".join(p.read_text() for p in work_dir.glob("*/*.log"))
    assert f"Auto resumed from the latest checkpoint {work_dir.resolve() / 'iter_4.pth'}" in logs
    assert "Iter(train) [6/6]" in logs and "Iter(train) [2/6]" not in logs  # continued at 4, not from 0
    assert load_checkpoint(work_dir / "iter_6.pth")["meta"]["iter"] == 6
    assert load_checkpoint(work_dir / "model.pth")["meta"]["iter"] == 6
