"""pgd train: overrides, runtime settings, model.pth (student only, atomic, weights_only-loadable), resume."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from train_helpers import tiny_atss, tiny_coco, tiny_config_text, tiny_run, train_tiny  # noqa: F401  (fixtures)

from pgd import cli_common, launch, run_layout, run_setup, train
from pgd.checkpoint import load_checkpoint


def _build(model_cfg: dict) -> nn.Module:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    return MODELS.build(model_cfg)


def test_parse_overrides_literals_and_bare_words():
    assert cli_common.parse_overrides(["train_cfg.max_iters=20", "a.b=[1, 2]", "opt.type=AdamW", "x=None",
                                  "lr=1e-3", "s='3'"]) == {
        "train_cfg.max_iters": 20, "a.b": [1, 2], "opt.type": "AdamW", "x": None, "lr": 1e-3, "s": "3"}
    with pytest.raises(cli_common.UsageError, match="KEY=VALUE"):
        cli_common.parse_overrides(["max_iters"])


def test_threads_from_env(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PGD_THREADS", "1")
        cli_common.set_threads(None)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        monkeypatch.setenv("PGD_THREADS", "one")
        with pytest.raises(cli_common.UsageError, match="PGD_THREADS"):
            cli_common.set_threads(None)
        with pytest.raises(cli_common.UsageError, match=">= 1"):
            cli_common.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert train.main(["--detector", "atss", "--work-dir", str(tmp_path / "r")]) == 2
    assert "missing --backbone --role" in capsys.readouterr().err
    assert train.main(["--detector", "atss", "--backbone", "r50", "--role", "student", "--method", "pgd",
                       "--work-dir", str(tmp_path / "r")]) == 2
    assert "--method pgd needs --teacher-run" in capsys.readouterr().err
    assert train.main(["--config", str(tmp_path / "none.py"), "--work-dir", str(tmp_path / "r")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert train.main(["--detector", "yolo", "--backbone", "r50", "--role", "student",
                       "--work-dir", str(tmp_path / "r"), "--no-mlflow"]) == 2
    assert "unknown detector 'yolo'" in capsys.readouterr().err


def test_matrix_rows_compose_with_seeded_names_and_teacher_paths(tmp_path, capsys):
    parse = train.build_parser().parse_args
    args = parse(["--run", "atss_r101_teacher", "--seed", "2", "--results", str(tmp_path)])
    cfg, info = run_setup.compose(args)
    # seed 0 keeps the bare id; other seeds get _s<seed> (pgd.matrix.run_name), in the dir and the MLflow name
    assert info["run_id"] == "atss_r101_teacher_s2" and info["tables"] == "t1,t2,t5"
    assert (info["detector"], info["backbone"], info["role"], info["method"]) == ("atss", "r101", "teacher", "none")
    assert Path(args.work_dir) == tmp_path / "mini" / "runs" / "atss_r101_teacher_s2"
    assert cfg.model.backbone.depth == 101

    # a distilled row needs its teacher's finished run (seed 0) in the same results tree
    assert train.main(["--run", "atss_r50_pgd", "--seed", "1", "--results", str(tmp_path)]) == 2
    assert "teacher file missing" in capsys.readouterr().err
    teacher = tmp_path / "mini" / "runs" / "atss_r101_teacher"
    teacher.mkdir(parents=True)
    (teacher / "config.py").touch()
    (teacher / "model.pth").touch()
    cfg, info = run_setup.compose(parse(["--run", "atss_r50_pgd", "--seed", "1", "--results", str(tmp_path)]))
    assert cfg.model.type == "DistillDetector" and info["run_id"] == "atss_r50_pgd_s1"
    assert cfg.model.teacher == {"config": str(teacher.resolve() / "config.py"),
                                 "checkpoint": str(teacher.resolve() / "model.pth")}
    assert cfg.model.student.backbone.depth == 50

    assert train.main(["--run", "atss_r50_pgd", "--backbone", "r18"]) == 2
    assert "drop --backbone" in capsys.readouterr().err
    assert train.main(["--run", "atss_r50_pgd", "--dataset", "crowdhuman"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert train.main(["--run", "no_such_run"]) == 2
    assert "no_such_run" in capsys.readouterr().err


def test_runtime_cpu_distributed_uses_gloo_and_cpu_wrapper(tmp_path):
    from mmengine.config import Config

    cfg = Config(dict(model=dict(type="ATSS"), env_cfg=dict(dist_cfg=dict(backend="nccl"))))
    args = SimpleNamespace(work_dir=str(tmp_path), seed=3, launcher="pytorch", resume=True, no_mlflow=True)
    launch.apply_runtime(cfg, args, {"run_id": "r", "profile": "mini"})
    assert cfg.env_cfg.dist_cfg.backend == ("nccl" if torch.cuda.is_available() else "gloo")
    assert cfg.randomness.seed == 3 and cfg.resume is True and cfg.load_from is None
    assert cfg.run_info.run_id == "r"
    if not torch.cuda.is_available():
        assert cfg.model_wrapper_cfg.type == "CPUDistributedDataParallel"


class _Distiller(nn.Module):
    """Shaped like the DistillDetector for export: student, teacher and KD-loss modules with parameters."""

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.kd_losses = nn.ModuleList([nn.Conv2d(16, 16, 1)])  # e.g. an FGD/FRS adapter


def test_model_pth_of_distiller_is_student_only_and_loads_strict(tmp_path):
    from mmengine.config import Config

    torch.manual_seed(0)
    student_cfg = tiny_atss()
    teacher_cfg = tiny_atss()
    teacher_cfg["neck"]["out_channels"] = 32
    model = _Distiller(_build(student_cfg), _build(teacher_cfg))
    cfg = Config(dict(model=dict(type="DistillDetector", student=student_cfg,
                                 teacher=dict(config="t/config.py", checkpoint="t/model.pth")),
                      run_info=dict(run_id="atss_r50_pgd", profile="mini"),
                      custom_imports=dict(imports=["pgd.models"], allow_failed_imports=False)))
    path = tmp_path / "model.pth"
    run_layout.export_model(model, cfg, path, {"iter": 7})

    ckpt = load_checkpoint(path)  # weights_only=True
    sd = ckpt["state_dict"]
    assert set(sd) == set(model.student.state_dict())
    assert not any(k.startswith(("teacher", "kd_losses", "student.")) for k in sd)
    assert ckpt["meta"]["iter"] == 7 and ckpt["meta"]["run_info"]["run_id"] == "atss_r50_pgd"

    meta_cfg = Config.fromstring(ckpt["meta"]["model_config"], ".py")
    assert meta_cfg.custom_imports.imports == ["pgd.models"]  # the project's heads register on parsing
    plain_cfg = meta_cfg.model
    assert plain_cfg.type == "ATSS" and plain_cfg.neck.out_channels == 16
    plain = _build(plain_cfg)
    missing, unexpected = plain.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    for key, value in model.student.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key
    assert run_layout.plain_model_config(cfg)["type"] == "ATSS"
    # a preprocessor given on the distiller (not on the student) is the student's at test time
    pre = dict(type="DetDataPreprocessor", mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], pad_size_divisor=64)
    bare_student = {k: v for k, v in student_cfg.items() if k != "data_preprocessor"}
    wrapped = Config(dict(model=dict(type="DistillDetector", student=bare_student, data_preprocessor=pre)))
    assert run_layout.plain_model_config(wrapped)["data_preprocessor"]["pad_size_divisor"] == 64
    assert run_layout.plain_model_config(cfg)["data_preprocessor"]["pad_size_divisor"] == 32  # the student's own wins


def test_model_pth_write_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    from mmengine.config import Config

    model = _build(tiny_atss())
    cfg = Config(dict(model=tiny_atss()))
    path = tmp_path / "model.pth"
    real_save = torch.save

    def torn_save(obj, handle, *a, **k):  # some bytes reach the temp file, then the job is killed
        handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        run_layout.export_model(model, cfg, path)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(torch, "save", real_save)
    run_layout.export_model(model, cfg, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
    assert set(load_checkpoint(path)["state_dict"]) == set(model.state_dict())


def test_trained_run_layout_and_model(tiny_run):
    from mmengine.config import Config

    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.py", "model.pth", "iter_2.pth", "iter_4.pth", "last_checkpoint"} <= names
    cfg = Config.fromfile(str(tiny_run / "config.py"))
    assert cfg.work_dir == str(tiny_run.resolve()) and cfg.randomness.seed == 0
    ckpt = load_checkpoint(tiny_run / "model.pth")
    assert ckpt["meta"]["iter"] == 4
    assert ckpt["meta"]["dataset_meta"]["classes"] == ["square", "wide", "tall"]
    # the exported weights are the final iteration's: the same tensors as mmengine's own iter_4 checkpoint
    last = load_checkpoint(tiny_run / "iter_4.pth")["state_dict"]
    assert set(ckpt["state_dict"]) == set(last)
    assert all(torch.equal(ckpt["state_dict"][k], last[k]) for k in last)
    model = _build(cfg.model)
    model.load_state_dict(ckpt["state_dict"], strict=True)


def test_trained_run_records_its_digest(tiny_run):
    """provenance.json: the digest of the recorded recipe, also in config.py's run_info (pgd.provenance)."""
    from mmengine.config import Config

    from pgd import provenance as pv

    record = pv.read_provenance(tiny_run)
    assert record is not None and set(record) >= {"digest", "recipe", "commit", "dirty", "time", "threads"}
    assert record["threads"] == 1      # train_tiny's --threads 1: not in the digest, but it moves the numbers
    assert pv.digest(record["recipe"]) == record["digest"]
    assert Config.fromfile(str(tiny_run / "config.py")).run_info["digest"] == record["digest"]
    assert record["commit"] is None or len(record["commit"]) == 40


def _logged_steps(work_dir: Path) -> list[int]:
    """Steps of all loss records of a run dir, over every Runner session's scalars.json, oldest first."""
    out = []
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        lines = path.read_text().splitlines()
        out += [json.loads(line)["step"] for line in lines if "loss" in line]
    return out


def test_resume_continues_at_saved_iteration(tmp_path, tiny_coco):
    work_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert train_tiny(work_dir, tiny_coco, max_iters=4) == 0
        first = load_checkpoint(work_dir / "iter_4.pth")
        assert train_tiny(work_dir, tiny_coco, "--resume", max_iters=6) == 0
    finally:
        torch.set_num_threads(threads)
    # the resumed session logged only step 6: it started at iteration 4 (from 0 it would log 2, 4, 6 again)
    assert _logged_steps(work_dir) == [2, 4, 6]
    assert (work_dir / "last_checkpoint").read_text().strip().endswith("iter_6.pth")
    resumed = load_checkpoint(work_dir / "iter_6.pth")
    assert resumed["meta"]["iter"] == 6 and first["meta"]["iter"] == 4
    assert load_checkpoint(work_dir / "model.pth")["meta"]["iter"] == 6
    # training moved the weights on from the resumed state
    key = "bbox_head.atss_cls.weight"
    assert not torch.equal(first["state_dict"][key], resumed["state_dict"][key])


@pytest.mark.slow  # ~35 s: creating the MLflow sqlite schema dominates
def test_resume_continues_the_same_mlflow_run(tmp_path, tiny_coco):
    from mlflow.tracking import MlflowClient

    from pgd import tracking

    work_dir = tmp_path / "results" / "mini" / "runs" / "tiny_resume"
    config = tmp_path / "tiny.py"
    threads = torch.get_num_threads()
    try:
        config.write_text(tiny_config_text(tiny_coco, max_iters=4))
        for extra in ([], ["--resume", "--set", "train_cfg.max_iters=6"]):
            assert train.main(["--config", str(config), "--work-dir", str(work_dir), "--threads", "1", *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "MLFLOW_RUN_ID" not in os.environ
    client = MlflowClient(tracking_uri=tracking.tracking_uri(tmp_path / "results" / "mini"))
    exp = client.get_experiment_by_name("pgd-mini")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == ["tiny_resume"]  # one run, not one per session
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]
    assert run.data.params["train_cfg.max_iters"] == "4" and run.data.params["resume"] == "False"


def test_train_eval_tests_in_process_into_the_same_mlflow_run(tmp_path, tiny_coco):
    """`pgd train --eval` (what the workflow runs): model.pth, then metrics.json and the AP in the training's own
    MLflow run, from one process."""
    from mlflow.tracking import MlflowClient

    from pgd import tracking
    from pgd.evaluation import metrics as M

    work_dir = tmp_path / "results" / "mini" / "runs" / "tiny_eval"
    config = tmp_path / "tiny.py"
    threads = torch.get_num_threads()
    try:
        config.write_text(tiny_config_text(tiny_coco, max_iters=2))
        assert train.main(["--config", str(config), "--work-dir", str(work_dir), "--threads", "1", "--eval"]) == 0
    finally:
        torch.set_num_threads(threads)
    rec = M.read_metrics_json(work_dir / "metrics.json")
    assert rec["dataset"] == "coco" and 0.0 <= rec["AP"] <= rec["AP50"] <= 100.0
    client = MlflowClient(tracking_uri=tracking.tracking_uri(tmp_path / "results" / "mini"))
    runs = client.search_runs([client.get_experiment_by_name("pgd-mini").experiment_id])
    assert [r.info.run_name for r in runs] == ["tiny_eval"]
    assert runs[0].data.metrics["AP"] == pytest.approx(rec["AP"])
    assert "loss" in runs[0].data.metrics


def test_train_eval_refuses_distributed_launch(tmp_path, capsys):
    assert train.main(["--detector", "atss", "--backbone", "r50", "--role", "student", "--work-dir",
                       str(tmp_path / "w"), "--launcher", "pytorch", "--eval", "--no-mlflow"]) == 2
    assert "pgd eval --run-dir" in capsys.readouterr().err
