"""End to end like a user: `pgd data coco` -> `pgd train` teacher (R101) -> `pgd teacher-cache` -> `pgd train` PGD
student (R50), from matrix rows -> `pgd eval` -> metrics.json and the MLflow runs read back with MlflowClient."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ITERS, LOG_EVERY = 6, 2
TEACHER, STUDENT = "atss_r101_teacher", "atss_r50_pgd"


def _pgd(cwd: Path, *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PGD_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "pgd.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"pgd {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    _pgd(tmp, "data", "coco", "--out", "data", "--num-train", "16", "--num-val", "8", "--seed", "0")
    short = ["--set", f"data_root={tmp / 'data'}", "--set", f"train_cfg.max_iters={ITERS}",
             "--set", f"default_hooks.checkpoint.interval={ITERS // 2}",
             "--set", f"default_hooks.logger.interval={LOG_EVERY}"]
    runs = tmp / "results" / "mini" / "runs"
    _pgd(tmp, "train", "--run", TEACHER, "--profile", "mini", "--work-dir", str(runs / TEACHER), *short)
    # the mini profile's students read their teacher's outputs from a cache built once per teacher
    _pgd(tmp, "teacher-cache", "--teacher-dir", str(runs / TEACHER), "--set", f"data_root={tmp / 'data'}")
    assert (runs / TEACHER / "teacher_cache.pt").is_file()
    _pgd(tmp, "train", "--run", STUDENT, "--profile", "mini", "--work-dir", str(runs / STUDENT),
         "--teacher-dir", str(runs / TEACHER), *short)
    for run in (TEACHER, STUDENT):
        _pgd(tmp, "eval", "--run-dir", str(runs / run))
    return tmp


def _client(tmp: Path):
    from mlflow.tracking import MlflowClient

    db = tmp / "results" / "mini" / "mlflow.db"
    assert db.is_file(), "the MLflow store lives in <results>/<profile>/ beside the runs"
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def _run(client, name: str):
    exp = client.get_experiment_by_name("pgd-mini")
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.mark.parametrize("name", [TEACHER, STUDENT])
def test_metrics_json(pipeline, name):
    rec = json.loads((pipeline / "results" / "mini" / "runs" / name / "metrics.json").read_text())
    assert list(rec) == ["dataset", "AP", "AP50", "AP75", "APs", "APm", "APl", "provenance"]
    assert rec["dataset"] == "coco"
    # which configuration and code the numbers come from (pgd.provenance)
    prov = json.loads((pipeline / "results" / "mini" / "runs" / name / "provenance.json").read_text())
    assert rec["provenance"] == {k: prov[k] for k in ("digest", "commit", "dirty", "threads")}
    for key in ("AP", "AP50", "AP75"):
        assert isinstance(rec[key], float) and 0.0 <= rec[key] <= 100.0
    for key in ("APs", "APm", "APl"):  # the generator draws small, medium and large objects
        assert rec[key] is not None and 0.0 <= rec[key] <= 100.0
    assert rec["AP"] <= rec["AP50"] + 1e-6  # AP averages IoU 0.50..0.95, AP50 is its loosest threshold


@pytest.mark.parametrize("name, model_type", [(TEACHER, "ATSS"), (STUDENT, "DistillDetector")])
def test_mlflow_run(pipeline, name, model_type):
    from pgd.matrix import load_matrix

    client = _client(pipeline)
    run = _run(client, name)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    # the tables the matrix row feeds, in the paper's order (Table 1 and Table 5 at least, for both runs)
    assert tags["tables"] == ",".join(load_matrix()[name].tables)
    assert {"t1", "t5"} <= set(tags["tables"].split(","))
    assert tags["detector"] == "atss" and tags["role"] in ("teacher", "student")
    params = run.data.params
    # the flattened resolved config: composed, profile-scaled and overridden values
    assert params["model.type"] == model_type
    assert params["train_cfg.max_iters"] == str(ITERS)
    assert params["run_info.run_id"] == name
    assert params["randomness.seed"] == "0"
    assert len(params) > 100
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(LOG_EVERY, ITERS + 1, LOG_EVERY))
    assert all(m.value > 0 for m in history)
    rec = json.loads((pipeline / "results" / "mini" / "runs" / name / "metrics.json").read_text())
    for key, value in rec.items():
        if key not in ("dataset", "provenance") and value is not None:
            assert run.data.metrics[key] == pytest.approx(value)
    assert tags["digest"] == rec["provenance"]["digest"]
    arts = _artifacts(client, run.info.run_id)
    assert {"config.py", "metrics.json"} <= arts
    assert any(a.endswith(".log") for a in arts)


def test_student_logs_kd_losses(pipeline):
    client = _client(pipeline)
    run = _run(client, STUDENT)
    kd = sorted(k for k in run.data.metrics if k.startswith("loss_pgd"))
    assert kd, sorted(run.data.metrics)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, kd[0])]
    assert steps == list(range(LOG_EVERY, ITERS + 1, LOG_EVERY))


def test_student_model_pth_is_a_plain_detector(pipeline):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from pgd.checkpoint import load_checkpoint

    register_all_modules()
    run_dir = pipeline / "results" / "mini" / "runs" / STUDENT
    ckpt = load_checkpoint(run_dir / "model.pth")
    sd = ckpt["state_dict"]
    assert not any(k.startswith(("teacher", "student.", "kd_losses")) for k in sd)
    model_cfg = Config.fromstring(ckpt["meta"]["model_config"], ".py").model
    assert model_cfg.type == "ATSS" and model_cfg.backbone.depth == 50
    model = MODELS.build(model_cfg)
    model.load_state_dict(sd, strict=True)
    # model.pth is the final iteration's student: the same tensors as mmengine's last (distiller) checkpoint
    full = load_checkpoint(run_dir / f"iter_{ITERS}.pth")["state_dict"]
    student = {k[len("student."):]: v for k, v in full.items() if k.startswith("student.")}
    assert set(student) == set(sd)
    assert all((student[k] == sd[k]).all() for k in sd)
