"""pgd.tracking: one sqlite MLflow store per profile, safe under concurrent writers; mmengine's MLflowVisBackend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pgd import tracking
from pgd.tracking import (experiment_name, find_run, log_eval_metrics, mlflow_vis_backend, prepare_tracking,
                          tracking_uri)

torch.set_num_threads(1)
mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def keep_default_scope():
    """A Runner makes its default scope ('mmengine' here) the current one for the whole process; later test modules
    that build mmdet modules through the current scope would then miss them. Put the previous state back."""
    from mmengine.registry import DefaultScope

    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict = saved


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store shared by the tests that do not need a fresh one (creating the schema takes seconds); they keep
    apart through profile and run names."""
    return tmp_path_factory.mktemp("store") / "results"


def client_for(results_dir) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(results_dir))


def test_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking_uri("results/mini") == f"sqlite:///{tmp_path}/results/mini/mlflow.db"
    assert tracking_uri(tmp_path / "r") == f"sqlite:///{tmp_path}/r/mlflow.db"


@pytest.mark.parametrize("bad", ["", "a/b", "../x", None, "-x"])
def test_experiment_name_rejects_bad_profiles(bad):
    with pytest.raises(ValueError, match="profile"):
        experiment_name(bad)
    assert experiment_name("paper") == "pgd-paper"


def test_prepare_is_idempotent_and_keeps_artifacts_under_results(store):
    first = prepare_tracking(store, "prep")
    assert prepare_tracking(store, "prep") == first
    exp = client_for(store).get_experiment(first)
    assert exp.name == "pgd-prep"
    assert exp.artifact_location == (store / "mlartifacts").as_uri()
    assert (store / "mlflow.db").is_file()
    assert prepare_tracking(store, "prep2") != first  # one experiment per profile


def test_retry_only_on_locked_database(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            try:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")
            except RuntimeError as inner:
                raise ValueError("wrapped by mlflow") from inner
        return "ok"

    assert tracking._retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(KeyError):
        tracking._retry(lambda: (calls.append(1), {}["missing"]))
    assert len(calls) == 4  # other errors are not retried
    with pytest.raises(RuntimeError, match="locked"):
        tracking._retry(lambda: (_ for _ in ()).throw(RuntimeError("database is locked")), attempts=3)


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import mmengine.visualization  # registers MLflowVisBackend
    from mmengine.config import Config
    from mmengine.registry import VISBACKENDS
    from pgd.tracking import log_eval_metrics, mlflow_vis_backend

    results, name = sys.argv[1], sys.argv[2]
    work_dir = Path(sys.argv[3])
    work_dir.mkdir(parents=True)
    (work_dir / "config.py").write_text(f"name = {name!r}\\n")
    cfg = Config(dict(name=name, work_dir=str(work_dir), model=dict(depth=50, neck=dict(channels=[8, 16])),
                      optim_wrapper=dict(optimizer=dict(lr=0.01))))
    backend = VISBACKENDS.build(mlflow_vis_backend(results, "mini", name, save_dir=str(work_dir / "vis"),
                                                   tags=dict(tables=["t1", "t5"], detector="atss", role="student")))
    backend.add_config(cfg)
    for step in range(1, 51):
        # what mmengine's LoggerHook passes; only the losses and lr are measurements
        backend.add_scalars({"loss": 1.0 / step, "loss_kd": 2.0 * step, "lr": 0.01, "base_lr": 0.01, "iter": step,
                             "time": 0.5, "data_time": 0.1}, step=step)
    backend.close()
    metrics = work_dir / "metrics.json"
    metrics.write_text('{"dataset": "coco", "AP": %d}' % (40 + len(name)))
    log_eval_metrics(results, "mini", name, {"dataset": "coco", "AP": 40 + len(name)}, [metrics])
""")


def test_two_processes_share_one_fresh_store(tmp_path):
    """Two trainings start at the same moment on a store that does not exist yet: schema creation, experiment
    creation and interleaved writes; afterwards both runs hold everything."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    results = tmp_path / "results" / "mini"
    names = ["atss_r50_pgd", "gfl_r50_kd"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(results), n, str(tmp_path / n)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in names]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]

    client = client_for(results)
    for name in names:
        run = find_run(results, "mini", name)
        assert run is not None, name
        assert run.info.status == "FINISHED"
        assert run.data.params == {"name": name, "work_dir": str(tmp_path / name), "model.depth": "50",
                                   "model.neck.channels": "[8, 16]", "optim_wrapper.optimizer.lr": "0.01"}
        assert run.data.tags["tables"] == "t1,t5" and run.data.tags["detector"] == "atss"
        assert run.data.tags["eval.dataset"] == "coco"
        loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
        assert loss == [(s, pytest.approx(1.0 / s)) for s in range(1, 51)]
        kd = client.get_metric_history(run.info.run_id, "loss_kd")
        assert sorted(m.value for m in kd) == [2.0 * s for s in range(1, 51)]
        assert run.data.metrics["AP"] == 40 + len(name)
        assert set(run.data.metrics) == {"loss", "loss_kd", "lr", "AP"}
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.py", "metrics.json"} <= artifacts
        local = Path(client.download_artifacts(run.info.run_id, "config.py", str(tmp_path / f"dl_{name}")))
        assert local.read_text() == f"name = {name!r}\n"
    assert len(client.search_experiments()) == 2  # pgd-mini and MLflow's Default, nothing duplicated


def test_log_eval_metrics_creates_or_reuses_run(tmp_path, store):
    results = store
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"dataset": "crowdhuman", "MR": 45.2, "AP": 88.1, "JI": 80.0}))
    run_id = log_eval_metrics(results, "mini", "crowd_r50", json.loads(metrics_file.read_text()), [metrics_file])
    run = client_for(results).get_run(run_id)
    assert run.info.run_name == "crowd_r50" and run.info.status == "FINISHED"
    assert run.data.metrics == {"MR": 45.2, "AP": 88.1, "JI": 80.0}
    assert run.data.tags["eval.dataset"] == "crowdhuman"
    # a second evaluation lands in the same run, overwriting the latest value
    assert log_eval_metrics(results, "mini", "crowd_r50", {"AP": 88.5}) == run_id
    assert client_for(results).get_run(run_id).data.metrics["AP"] == 88.5


def test_log_eval_metrics_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="'AP'"):
        log_eval_metrics(tmp_path, "mini", "r", {"AP": [1, 2]})
    with pytest.raises(TypeError, match="'ok'"):
        log_eval_metrics(tmp_path, "mini", "r", {"ok": True})
    with pytest.raises(ValueError, match="infinite"):
        log_eval_metrics(tmp_path, "mini", "r", {"AP": float("inf")})
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        log_eval_metrics(tmp_path, "mini", "r", {"AP": 1.0}, [tmp_path / "nothere.json"])
    with pytest.raises(ValueError, match="run_name"):
        mlflow_vis_backend(tmp_path, "mini", "")


def test_vis_backend_config_drives_a_runner(tmp_path, store):
    """The dict goes into a Runner's visualizer: the run gets the resolved config as params, the losses at the
    logger interval, and the dumped config file as an artifact."""
    from mmengine.config import Config
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, MODELS
    from mmengine.runner import Runner
    from torch import nn
    from torch.utils.data import Dataset

    @MODELS.register_module(name="TrackingToyModel", force=True)
    class ToyModel(BaseModel):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(2, width)

        def forward(self, inputs, mode="loss"):
            return dict(loss=self.fc(inputs).pow(2).mean())

    @DATASETS.register_module(name="TrackingToyData", force=True)
    class ToyData(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return dict(inputs=torch.full((2,), float(i)))

    results = store
    cfg = Config(dict(
        model=dict(type="TrackingToyModel", width=3),
        work_dir=str(tmp_path / "run"),
        experiment_name="tracking_runner_test",
        train_dataloader=dict(dataset=dict(type="TrackingToyData"), batch_size=2, num_workers=0,
                              sampler=dict(type="DefaultSampler", shuffle=False),
                              collate_fn=dict(type="default_collate")),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.001)),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=2), checkpoint=None),
        visualizer=dict(type="Visualizer", vis_backends=[
            mlflow_vis_backend(results, "mini", "toy_run", tags=dict(role="teacher", method=None))]),
        log_level="WARNING",
        default_scope="mmengine",
    ))
    runner = Runner.from_cfg(cfg)
    runner.train()
    runner.visualizer.close()  # what the Runner's after_run does in mmengine; closing twice is harmless

    run = find_run(results, "mini", "toy_run")
    assert run is not None and run.info.status == "FINISHED"
    assert run.data.params["model.width"] == "3"
    assert run.data.params["train_cfg.max_iters"] == "4"
    assert run.data.tags["role"] == "teacher" and run.data.tags["method"] == "none"
    assert run.data.tags["mlflow.note.content"] == ("`toy_run`: not a row of the experiment matrix "
                                                    "(configs/experiments.yaml).")
    client = client_for(results)
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert steps == [2, 4]
    # losses and lr once; no iter / time / data_time / base_lr
    assert set(run.data.metrics) == {"loss", "lr"}
    # config.py and the text log as train.log, nothing in timestamped folders
    artifacts = {a.path: a.is_dir for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.py": False, "train.log": False}
    log = Path(client.download_artifacts(run.info.run_id, "train.log", str(tmp_path / "dl")))
    session_log = next((tmp_path / "run").glob("*/*.log"))
    assert log.read_text() == session_log.read_text() and "init_weights" in log.read_text()
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_log_run_records_params_history_and_metrics(tmp_path, store):
    from pgd.tracking import log_run

    summary = tmp_path / "r50.pth.json"
    summary.write_text("{}")
    run_id = log_run(store, "mini", "pretrain_r50", params={"iters": 3, "lr": 0.005},
                     history=[{"iter": 1, "loss": 1.5}, {"iter": 3, "loss": 0.5}],
                     metrics={"heldout_accuracy": 0.75}, tags={"role": "pretrain"}, artifacts=[summary])
    client = client_for(store)
    run = client.get_run(run_id)
    assert run.info.run_name == "pretrain_r50" and run.info.status == "FINISHED"
    assert run.data.params == {"iters": "3", "lr": "0.005"}
    assert run.data.tags["role"] == "pretrain"
    assert run.data.metrics["heldout_accuracy"] == 0.75
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 1.5), (3, 0.5)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["r50.pth.json"]


def test_run_description_names_the_row_and_its_cells():
    from pgd.tracking import run_description

    text = run_description("atss_r50_pgd_s2")
    assert text.startswith("Row `atss_r50_pgd` of configs/experiments.yaml, seed 2: atss r50 student, method pgd, "
                           "teacher `atss_r101_teacher` (coco).")
    assert "Table cells: t1: ATSS / Ours; t5: Ours;" in text


def test_existing_experiment_gets_the_kind_tag(tmp_path):
    """A store made before the kind tag existed is tagged on the next prepare."""
    results = tmp_path / "old"
    results.mkdir()
    client = client_for(results)
    exp_id = client.create_experiment("pgd-mini")
    assert "mlflow.experimentKind" not in client.get_experiment(exp_id).tags
    assert prepare_tracking(results, "mini") == exp_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow      # `mlflow server` takes 20-60 s to come up on a busy 2-core machine
def test_mlflow_server_serves_a_logged_run_over_rest(tmp_path):
    """A real `mlflow server` on 127.0.0.1 over a store holding one run: the REST API returns the experiment (with
    the kind that opens the UI on its runs) and the run's params, metrics, tags and description; the server stops."""
    import urllib.parse
    import urllib.request

    from pgd.tracking import log_run, mlflow_server, ui_url

    results = tmp_path / "results" / "mini"
    run_id = log_run(results, "mini", "atss_r50_pgd", params={"model.backbone.depth": 50, "train_cfg.max_iters": 60},
                     history=[{"iter": 10, "loss": 1.5, "lr": 0.01}, {"iter": 20, "loss": 0.9, "lr": 0.01}],
                     metrics={"dataset": "coco", "AP": 29.0, "AP50": 44.4},
                     tags={"tables": ["t1", "t5"], "detector": "atss", "method": "pgd", "role": "student"})

    def get(base, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    with mlflow_server(results) as base:
        assert base.startswith("http://127.0.0.1:")
        exp = get(base, "experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": "pgd-mini"}))
        exp = exp["experiment"]
        assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == "custom_model_development"
        found = get(base, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                          "filter": "attributes.run_name = 'atss_r50_pgd'"})["runs"]
        assert [r["info"]["run_id"] for r in found] == [run_id]
        run = get(base, f"runs/get?run_id={run_id}")["run"]
        history = get(base, f"metrics/get-history?run_id={run_id}&metric_key=loss")["metrics"]
        url = ui_url(base, exp["experiment_id"], run_id)
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "atss_r50_pgd"
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"model.backbone.depth": "50",
                                                                     "train_cfg.max_iters": "60"}
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"loss": 0.9, "lr": 0.01, "AP": 29.0,
                                                                      "AP50": 44.4}
    assert [(m["step"], m["value"]) for m in history] == [(10, 1.5), (20, 0.9)]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["tables"] == "t1,t5" and tags["method"] == "pgd" and tags["eval.dataset"] == "coco"
    assert tags["mlflow.note.content"].startswith("Row `atss_r50_pgd` of configs/experiments.yaml, seed 0")
    assert url == f"{base}/#/experiments/{exp['experiment_id']}/runs/{run_id}?workflowType=machine_learning"
    with pytest.raises(OSError):                                   # stopped with the block
        urllib.request.urlopen(f"{base}/health", timeout=5)
