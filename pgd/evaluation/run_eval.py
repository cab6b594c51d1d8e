"""Evaluating a run directory: test ``model.pth`` with the evaluator of the run's ``config.py``, write
``metrics.json`` and log the numbers into the run's MLflow run (``pgd eval``, and ``pgd train --eval`` in the
training process).

The test Runner is built from the run's own ``config.py``; for a distilled run the model config is replaced by
the student's (``model.pth`` holds the student only). mmengine's logs for the evaluation go to
``<run dir>/eval/`` so that ``config.py`` in the run dir is never rewritten. ``metrics.json`` follows
docs/ARCHITECTURE.md (percentages, see :mod:`pgd.evaluation.metrics`) and is written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pgd.errors import UserError
from pgd.evaluation.metrics import empty_coco_record, infer_dataset, to_metrics_json, write_metrics_json
from pgd.preflight import check_data_files
from pgd.provenance import metrics_provenance
from pgd.run_layout import CONFIG_FILE, MODEL_FILE, RUN_INFO_KEY, plain_model_config, profile_results_dir


class EvalError(UserError, RuntimeError):
    """A run directory that cannot be evaluated (missing config or checkpoint, no evaluator)."""


def build_test_config(run_dir: Path, checkpoint: Path, overrides: dict[str, Any] | None = None):
    """The run's config turned into a single-process test config of the plain detector."""
    from mmengine.config import Config

    from pgd.config import apply_overrides

    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise EvalError(f"config not found: {config_path} (is {run_dir} a trained run directory?)")
    if not checkpoint.is_file():
        raise EvalError(f"checkpoint not found: {checkpoint} (training writes {MODEL_FILE} when it finishes)")
    cfg = Config.fromfile(str(config_path))
    for key in ("test_dataloader", "test_evaluator"):
        if not cfg.get(key):
            raise EvalError(f"{config_path} has no {key}; cannot evaluate")
    cfg.model = plain_model_config(cfg)
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    cfg.launcher = "none"
    cfg.pop("model_wrapper_cfg", None)
    cfg.work_dir = str(run_dir / "eval")
    # the training run's MLflow backend would open a second run; eval logs through pgd.tracking instead
    cfg.visualizer = dict(type="DetLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")])
    # the key must exist (+key adds one); data_root=DIR re-points the datasets and evaluators, as in pgd train
    apply_overrides(cfg, overrides)
    return cfg


def evaluate(run_dir: Path, checkpoint: Path | None = None, out: Path | None = None,
             overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """Run the test loop; returns (metrics.json record, the config used)."""
    from mmengine.runner import Runner

    from pgd.checkpoint import check_checkpoint, install_safe_globals

    checkpoint = checkpoint or run_dir / MODEL_FILE
    out = out or run_dir / "metrics.json"
    cfg = build_test_config(run_dir, checkpoint, overrides)
    # user errors that would otherwise surface inside the Runner, after mmengine's environment and config dump
    check_checkpoint(checkpoint)
    check_data_files(cfg, ("test_dataloader",))
    info = cfg.get(RUN_INFO_KEY) or {}
    dataset = info.get("dataset") or infer_dataset(cfg.test_evaluator)
    runner = Runner.from_cfg(cfg)
    install_safe_globals()  # model.pth needs none; a plain run's iter_*.pth given as --checkpoint does
    raw = runner.test()
    if not raw and dataset == "coco":
        record = empty_coco_record(coco_ann_file(cfg.test_evaluator))
    else:
        record = to_metrics_json(raw, dataset)
    prov = metrics_provenance(run_dir)
    if prov is not None:  # which configuration (digest) and code (commit) these numbers come from
        record["provenance"] = prov
    write_metrics_json(out, record)
    return record, cfg


def coco_ann_file(evaluator_cfg) -> str:
    """The annotation file of the CocoMetric in a test_evaluator config (a dict or a list of dicts)."""
    cfgs = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg]
    for c in cfgs:
        if c.get("type") == "CocoMetric" and c.get("ann_file"):
            return c["ann_file"]
    raise EvalError("the CocoMetric in test_evaluator has no ann_file")


def evaluate_and_log(run_dir: Path, results: str, mlflow: bool = True, checkpoint: Path | None = None,
                     out: Path | None = None, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path]:
    """`pgd eval` without the command line: evaluate, write metrics.json, log the numbers into the run's MLflow
    run. Also what ``pgd train --eval`` calls in the training process (one start-up per run instead of two)."""
    out = out or run_dir / "metrics.json"
    record, cfg = evaluate(run_dir, checkpoint, out, overrides)
    if mlflow:
        from pgd import tracking

        info = cfg.get(RUN_INFO_KEY) or {}
        profile = info.get("profile") or "mini"
        # an undefined metric (null, e.g. APl without large objects) has no MLflow value: it is left out there
        tracking.log_eval_metrics(
            profile_results_dir(run_dir, results, profile), profile, info.get("run_id") or run_dir.name,
            {k: v for k, v in record.items() if v is not None and k != "provenance"}, artifacts=[out])
    return record, out
