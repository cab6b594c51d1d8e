"""A run directory's layout (docs/ARCHITECTURE.md "Run directory") and its result, ``model.pth``.

The work dir receives ``config.py`` (dumped before training and re-read, so the file is exactly what trains and what
``pgd eval`` rebuilds), ``provenance.json``, mmengine's ``iter_*.pth`` / ``last_checkpoint`` (for ``--resume``), and
at the end ``model.pth``: ``{'state_dict', 'meta'}`` of the plain detector. For a distilled run the state dict is
the student's only (no teacher, no KD-loss modules) and ``meta['model_config']`` holds the student's model config
(with the run's ``custom_imports``) as Python source, so ``Config.fromstring(meta['model_config'], '.py').model``
builds a plain mmdet detector that loads the state dict with ``strict=True`` (:func:`plain_model_config` gives the
same dict from ``config.py``). Everything in the file is weights_only-loadable (tensors, dicts, strings, numbers).
"""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUN_INFO_KEY = "run_info"  # top-level config key: run id, profile and the MLflow tags of this run
MODEL_FILE = "model.pth"
CONFIG_FILE = "config.py"


def profile_results_dir(work_dir: Path, results: str, profile: str) -> Path:
    """``<results>/<profile>``, the folder of the profile's mlflow.db.

    A run dir laid out as the contract says (``<results>/<profile>/runs/<run>``) names it itself, so a workflow
    that moves the results root needs to tell only ``--work-dir``.
    """
    work_dir = Path(work_dir).resolve()
    if work_dir.parent.name == "runs" and work_dir.parent.parent.name == profile:
        return work_dir.parent.parent
    return Path(results) / profile


def plain_model_config(cfg) -> dict[str, Any]:
    """The plain detector's model config: the student's for a distiller, else ``cfg.model``."""
    model = cfg["model"]
    if "student" not in model:
        return model
    student = copy.deepcopy(model["student"])
    # normalisation and padding must match training; a preprocessor set on the distiller applies to the student
    if not student.get("data_preprocessor") and model.get("data_preprocessor"):
        student["data_preprocessor"] = copy.deepcopy(model["data_preprocessor"])
    return student


def _unwrap(model):
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model


def detector_state_dict(model) -> dict[str, Any]:
    """State dict of the deployable detector: a distiller (it has ``.student``) contributes the student only."""
    model = _unwrap(model)
    target = model.student if hasattr(model, "student") else model
    return {k: v.detach().cpu() for k, v in target.state_dict().items()}


def export_model(model, cfg, path: str | os.PathLike, extra_meta: Mapping[str, Any] | None = None) -> None:
    """Write ``model.pth``: {'state_dict': plain detector weights, 'meta': {...}} (weights_only-loadable)."""
    import mmdet
    import torch
    from mmengine.config import Config

    # custom_imports ride along so that Config.fromstring(meta['model_config']) registers the project's heads
    plain = dict(model=plain_model_config(cfg))
    if cfg.get("custom_imports"):
        plain["custom_imports"] = cfg["custom_imports"]
    model_cfg = Config(to_plain(plain))
    meta = {
        "model_config": model_cfg.pretty_text,  # Python source: loadable under weights_only, diffable
        "run_info": {k: str(v) for k, v in (cfg.get(RUN_INFO_KEY) or {}).items()},
        "mmdet_version": str(mmdet.__version__),
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-safe
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra_meta or {})
    from pgd.checkpoint import save_checkpoint

    save_checkpoint({"state_dict": detector_state_dict(model), "meta": meta}, path)  # tmp file + os.replace


def to_plain(obj: Any) -> Any:
    """ConfigDict / tuples -> plain dicts / lists of builtins (what weights_only unpickling accepts)."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def dataset_meta(runner) -> dict[str, Any]:
    try:
        meta = runner.train_dataloader.dataset.metainfo
    except Exception:  # noqa: BLE001  (a dataset without metainfo just means no class names in meta)
        return {}
    return {"dataset_meta": to_plain({k: v for k, v in meta.items() if k in ("classes", "palette")})}
