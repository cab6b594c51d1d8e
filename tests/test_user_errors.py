"""Validation before any compute, and user errors as one message: exit status 2, the problem, where and the fix,
no traceback (`pgd --debug` shows it). Subprocesses where the exit status and stderr are the point."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, snakemake
from train_helpers import make_coco, tiny_coco, tiny_config_text  # noqa: F401  (fixture)

from pgd import cli
from pgd.errors import UserError


def pgd(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgd.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def assert_one_message(p: subprocess.CompletedProcess, prog: str, *needles: str) -> str:
    """Exit 2, `<prog>: error: ...` naming every needle, no traceback."""
    err = p.stderr
    assert p.returncode == 2, f"exit {p.returncode}:\n{p.stdout[-2000:]}\n{err[-3000:]}"
    line = next((ln for ln in err.splitlines() if ln.startswith(f"{prog}: error: ")), None)
    assert line is not None, err[-3000:]
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert "Traceback" not in p.stdout + err
    return line


def _matrix_with(tmp_path: Path, run_id: str, overrides: dict) -> Path:
    with open(REPO / "configs" / "experiments.yaml") as f:
        doc = yaml.safe_load(f)
    row = next(r for r in doc["runs"] if r["id"] == run_id)
    row["method_overrides"] = overrides
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# ------------------------------------------------------------------------------------------ Snakemake config

def test_snakemake_config_typo_names_the_key_and_the_valid_ones(tmp_path):
    p = snakemake("-n", results=tmp_path, config=["teacher_iter=1200"], check=False)
    assert_one_message(p, "snakemake", "unknown config key 'teacher_iter' (did you mean 'teacher_iters'?)",
                       "valid keys: profile, matrix, results, coco_root, crowdhuman_root, teacher_iters,")


def test_snakemake_nested_typo_and_wrong_type(tmp_path):
    (tmp_path / "typo.yaml").write_text("resources: {train_teacher: {thread: 4}}\n")
    p = snakemake("-n", "--configfile", str(tmp_path / "typo.yaml"), results=tmp_path, check=False)
    assert_one_message(p, "snakemake", "unknown config key 'resources.train_teacher.thread' (did you mean "
                                       "'threads'?); valid keys under resources.train_teacher: threads, mem_mb,")
    p = snakemake("-n", results=tmp_path, config=["keep_checkpoints=3"], check=False)
    assert_one_message(p, "snakemake", "config key keep_checkpoints: 3 is not of type 'boolean'")


def test_paper_profile_without_data_names_the_keys_and_layout(tmp_path):
    p = snakemake("-n", results=tmp_path, check=False,
                  config=["profile=paper", f"coco_root={tmp_path}/coco", f"crowdhuman_root={tmp_path}/crowd"])
    line = assert_one_message(
        p, "snakemake", f"coco dataset not found: {tmp_path}/coco/annotations/instances_train2017.json does not "
        f"exist (config key coco_root={tmp_path}/coco)", "annotations/instances_val2017.json, train2017/, val2017/",
        "--config coco_root=", f"crowdhuman_root={tmp_path}/crowd (annotation_train.odgt, annotation_val.odgt")
    assert "MissingInputException" not in p.stdout + p.stderr, line


def test_matrix_typo_refused_at_load_by_snakemake_and_pgd_train(tmp_path):
    matrix = _matrix_with(tmp_path, "atss_r50_fgd", {"alhpa_fg": 2e-3})
    expected = ("(atss_r50_fgd): method_overrides: method 'fgd' has no option 'alhpa_fg' (did you mean "
                "'alpha_fg'?); its options: alpha_fg, beta_bg,")
    p = snakemake("-n", results=tmp_path, config=[f"matrix={matrix}"], check=False)
    assert_one_message(p, "snakemake", expected)
    # also a row that is not trained yet: the check is at load time, not when the student builds its model
    p = pgd("train", "--run", "atss_r101_teacher", "--matrix", str(matrix), "--work-dir", str(tmp_path / "w"),
            "--no-mlflow", cwd=tmp_path)
    assert_one_message(p, "pgd train", expected)


def test_pgd_preset_code_is_accepted(tmp_path):
    from pgd.config import compose_config
    from pgd.matrix import load_matrix

    matrix = load_matrix(_matrix_with(tmp_path, "atss_r50_pgd", {"preset": "code", "k": 9}))
    assert matrix["atss_r50_pgd"].method_overrides == {"preset": "code", "k": 9}
    cfg = compose_config("atss", "r50", "mini", "student", method="pgd", method_overrides={"preset": "code", "k": 9},
                         teacher=dict(config="t/config.py", checkpoint="t/model.pth"))
    assert (cfg.model.kd_losses[0].preset, cfg.model.kd_losses[0].k) == ("code", 9)
    with pytest.raises(UserError, match="preset must be 'paper' or 'code', got 'cod'"):
        load_matrix(_matrix_with(tmp_path, "atss_r50_pgd", {"preset": "cod"}))


# ------------------------------------------------------------------------------------------ pgd train / eval

def test_set_typo_names_a_close_match(tmp_path):
    p = pgd("train", "--detector", "atss", "--backbone", "r50", "--role", "student", "--work-dir",
            str(tmp_path / "w"), "--no-mlflow", "--set", "train_cfg.max_iter=20", cwd=tmp_path)
    assert_one_message(p, "pgd train", "--set train_cfg.max_iter: train_cfg has no key 'max_iter' (did you mean "
                                       "'max_iters'?)", "write --set +train_cfg.max_iter=VALUE")
    assert not (tmp_path / "w").exists()   # refused before anything was written


def test_set_plus_adds_a_new_key_and_existing_keys_apply():
    from pgd.config import compose_config

    cfg = compose_config("atss", "r50", "mini", "student", overrides={
        "train_cfg.max_iters": 20, "+train_cfg.note": "x", "param_scheduler.0.end": 5})
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.note, cfg.param_scheduler[0].end) == (20, "x", 5)
    with pytest.raises(UserError, match=r"param_scheduler is a list of 2 entries; '7' is not an index"):
        compose_config("atss", "r50", "mini", "student", overrides={"param_scheduler.7.end": 5})


def test_missing_data_is_named_before_the_runner(tmp_path):
    p = pgd("train", "--run", "atss_r101_teacher", "--profile", "paper", "--work-dir", str(tmp_path / "w"),
            "--no-mlflow", cwd=tmp_path, env={"PGD_COCO_ROOT": str(tmp_path / "nococo")})
    assert_one_message(p, "pgd train", f"train_dataloader: annotation file not found: {tmp_path}/nococo/"
                                       "annotations/instances_train2017.json; point $PGD_COCO_ROOT (Snakemake: "
                                       "--config coco_root=DIR)")
    assert "Environment" not in p.stdout + p.stderr    # mmengine's environment dump: no Runner was built


def test_ld_on_atss_is_refused_before_the_runner(tmp_path, tiny_coco):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.py").touch()
    (teacher / "model.pth").touch()
    p = pgd("train", "--detector", "atss", "--backbone", "r50", "--role", "student", "--method", "ld",
            "--teacher-dir", str(teacher), "--work-dir", str(tmp_path / "w"), "--no-mlflow",
            "--set", f"data_root={tiny_coco}/", cwd=tmp_path)
    assert_one_message(p, "pgd train", "LDLoss cannot distil 'atss'", "use LD with detector='gfl' only")


def _run_dir(tmp_path: Path, data_root: Path, checkpoint: bytes) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.py").write_text(tiny_config_text(data_root))
    (run / "model.pth").write_bytes(checkpoint)
    return run


def test_random_bytes_model_is_not_a_checkpoint(tmp_path, tiny_coco):
    run = _run_dir(tmp_path, tiny_coco, os.urandom(4096))
    p = pgd("eval", "--run-dir", str(run), "--no-mlflow", cwd=tmp_path)
    line = assert_one_message(p, "pgd eval", f"{run}/model.pth is not a checkpoint: neither a torch zip archive "
                                             "nor a legacy torch file (4096 bytes")
    assert "Please file an issue" not in p.stderr and "weights_only=False" not in p.stderr, line
    p = pgd("--debug", "eval", "--run-dir", str(run), "--no-mlflow", cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" in p.stderr and "CheckpointError" in p.stderr


def test_refused_checkpoint_says_why_without_weights_only_false(tmp_path):
    import argparse

    import torch

    from pgd.checkpoint import CheckpointError, check_checkpoint, load_checkpoint

    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {}, "meta": argparse.Namespace(x=1)}, path)
    with pytest.raises(CheckpointError) as early:      # before a Runner: reads the pickle's opcodes only
        check_checkpoint(path)
    assert str(early.value) == (
        f"{path}: refused by the safe (weights_only) loader: it holds argparse.Namespace, which pgd.checkpoint's "
        "allow-list does not cover. Checkpoints may hold tensors, containers, numbers, strings and mmengine's "
        "message-hub objects; save plain state dicts")
    with pytest.raises(CheckpointError) as late:       # the loader itself: torch's reason without its advice
        load_checkpoint(path)
    assert "GLOBAL argparse.Namespace was not an allowed global" in str(late.value)
    for err in (early.value, late.value):
        assert "weights_only=False" not in str(err) and "`False`" not in str(err) and "add_safe_globals" not in str(err)


def test_eval_data_root_repoints_the_saved_run(tmp_path, tiny_coco):
    """`pgd eval --set data_root=OTHER` tests on OTHER's val set: datasets and evaluator of the saved config."""
    from pgd.evaluation.run_eval import build_test_config

    import torch

    other = make_coco(tmp_path / "other", num_train=1, num_val=2, seed=1)
    torch.save({"state_dict": {}}, tmp_path / "m.pth")
    run = _run_dir(tmp_path, tiny_coco, (tmp_path / "m.pth").read_bytes())
    cfg = build_test_config(run, run / "model.pth", {"data_root": str(other)})
    assert cfg.test_dataloader.dataset.data_root == str(other)
    assert cfg.test_evaluator.ann_file == str(other / "annotations" / "instances_val.json")
    assert cfg.train_dataloader.dataset.data_root == str(other)
    before = build_test_config(run, run / "model.pth")
    assert before.test_evaluator.ann_file == str(tiny_coco / "annotations" / "instances_val.json")
    # a missing other set is named before the Runner is built
    shutil.rmtree(other / "images")
    p = pgd("eval", "--run-dir", str(run), "--no-mlflow", "--set", f"data_root={other}", cwd=tmp_path)
    assert_one_message(p, "pgd eval", f"test_dataloader: image folder not found: {other}/images/val")


def test_corrupt_annotations_are_one_message(tmp_path, tiny_coco):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    (data / "annotations" / "instances_train.json").write_text('{"images": [')
    config = tmp_path / "tiny.py"
    config.write_text(tiny_config_text(data).replace("'CocoDataset'", "'ValidatedCocoDataset'")
                      + "custom_imports = dict(imports=['pgd.data.datasets'], allow_failed_imports=False)\n")
    p = pgd("train", "--config", str(config), "--work-dir", str(tmp_path / "w"), "--no-mlflow", "--threads", "1",
            cwd=tmp_path)
    assert_one_message(p, "pgd train", f"{data}/annotations/instances_train.json: unreadable JSON")


# ------------------------------------------------------------------------------------------ the dispatcher

@pytest.fixture
def fake_command(tmp_path, monkeypatch):
    """A `pgd fake` command whose main raises what the test puts in FAKE_ERROR."""
    (tmp_path / "fake_cmd.py").write_text(
        "import os\nfrom pgd.errors import UserError\n"
        "def main(argv):\n"
        "    if os.environ['FAKE_ERROR'] == 'user':\n"
        "        raise UserError('bad input: x; fix: y')\n"
        "    raise RuntimeError('a bug')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_cmd", "test"))
    monkeypatch.delenv("PGD_DEBUG", raising=False)
    return monkeypatch


def test_dispatcher_user_error_bug_and_debug(fake_command, capsys):
    fake_command.setenv("FAKE_ERROR", "user")
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err == "pgd fake: error: bad input: x; fix: y\n"
    with pytest.raises(UserError, match="bad input"):
        cli.main(["--debug", "fake"])          # --debug: the traceback
    fake_command.delenv("PGD_DEBUG")
    with pytest.raises(UserError):
        cli.main(["fake", "--debug"])          # also among the command's arguments
    fake_command.delenv("PGD_DEBUG")
    fake_command.setenv("FAKE_ERROR", "bug")
    with pytest.raises(RuntimeError, match="a bug"):   # a bug keeps its traceback
        cli.main(["fake"])


def test_kd_loss_keys_added_with_plus_are_still_checked_before_the_runner():
    from pgd.config import compose_config
    from pgd.preflight import check_distillation

    cfg = compose_config("atss", "r50", "mini", "student", method="pgd",
                         teacher=dict(config="t/config.py", checkpoint="t/model.pth"),
                         overrides={"+model.kd_losses.0.alhpa": 0.1})
    with pytest.raises(UserError, match=r"KD loss PGDLoss has no option 'alhpa' \(did you mean 'alpha'\?\)"):
        check_distillation(cfg)
