"""scripts/gpu_bench.py, the measuring half of scripts/gpu_check.sh: the parts that run without a GPU."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "scripts" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_is_a_coco2017_layout_at_the_asked_size(bench, tmp_path):
    from PIL import Image
    from mmdet.datasets import CocoDataset

    info = bench.make_data(tmp_path / "coco", num_train=3, num_val=1, width=96, height=64, seed=0)
    root = tmp_path / "coco"
    assert not (root / "_square").exists()
    for split, n in (("train", 3), ("val", 1)):
        ann = json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())
        assert len(ann["images"]) == n and info[split]["images"] == n
        assert info[split]["objects"] == len(ann["annotations"])
        for img in ann["images"]:
            assert (img["width"], img["height"]) == (96, 64)
            with Image.open(root / f"{split}2017" / img["file_name"]) as im:
                assert im.size == (96, 64)
        for a in ann["annotations"]:          # nothing reaches past the crop
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 96 and y + h <= 64
        # the paper profile's COCO config picks categories by COCO's names
        assert [c["name"] for c in ann["categories"]] == list(CocoDataset.METAINFO["classes"])
        assert [c["id"] for c in ann["categories"]] == list(range(1, 81))
        assert {a["category_id"] for a in ann["annotations"]} <= set(range(1, 7))   # the six shapes


def test_train_summary_reads_the_mmengine_log(bench, tmp_path):
    run = tmp_path / "run" / "20261201_120000"
    run.mkdir(parents=True)
    head = "2026/12/01 12:00:00 - mmengine - INFO - "
    lines = [head + "Checkpoints will be saved to /x.",
             # start-up window: left out of the medians
             head + "Iter(train) [ 10/200]  base_lr: 1.0e-04 lr: 1.0e-04  eta: 0:10:00  time: 2.0000  "
                    "data_time: 0.5000  memory: 9000  grad_norm: 5.0  loss: 3.0000  loss_cls: 1.0",
             head + "Iter(train) [ 20/200]  base_lr: 1.0e-04 lr: 1.0e-04  eta: 0:01:00  time: 0.4000  "
                    "data_time: 0.1000  memory: 9100  grad_norm: 5.0  loss: 2.5000  loss_cls: 1.0",
             head + "Iter(train) [ 30/200]  base_lr: 1.0e-04 lr: 1.0e-04  eta: 0:01:00  time: 0.6000  "
                    "data_time: 0.3000  memory: 9050  grad_norm: 5.0  loss: 2.0000  loss_cls: 1.0",
             head + "Iter(train) [ 40/200]  base_lr: 1.0e-04 lr: 1.0e-04  eta: 0:01:00  time: 0.5000  "
                    "data_time: 0.2000  memory: 9080  grad_norm: 5.0  loss: 1.5000  loss_cls: 1.0",
             head + "Iter(val) [2/2]    eta: 0:00:00  time: 0.1000  data_time: 0.0100  memory: 2000"]
    (run / "20261201_120000.log").write_text("\n".join(lines) + "\n")
    out = bench.train_summary(tmp_path / "run")
    assert out["last_iter"] == 40 and out["log_windows"] == 4 and out["last_loss"] == 1.5
    assert out["s_per_iter"] == pytest.approx(0.5) and out["data_s_per_iter"] == pytest.approx(0.2)
    assert out["peak_memory_mb"] == 9100
    # a CPU run logs no memory; an epoch-based loop logs Epoch(train) lines
    (run / "20261201_120000.log").write_text(
        head + "Epoch(train) [1][1/1]  lr: 2.5e-06  eta: 0:00:00  time: 5.8866  data_time: 0.2302  "
               "grad_norm: 990.98  loss: 153.7358  loss_cls: 1.1284\n")
    out = bench.train_summary(tmp_path / "run")
    assert out["s_per_iter"] == pytest.approx(5.8866) and "peak_memory_mb" not in out and out["last_iter"] is None
    assert bench.train_summary(tmp_path / "empty")["error"] == "no mmengine log: the run did not start"


def test_gpu_check_refuses_without_cuda(tmp_path):
    """Off a GPU machine the full check stops after writing env.txt, with exit 2 and the reason."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PGD_GPU_WORK": str(tmp_path / "work"),
                            "PGD_PYTHON": sys.executable},
                       timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no CUDA torch here" in p.stdout
    assert "available False" in (tmp_path / "out" / "env.txt").read_text()
