"""The runtime of a training run: work dir, seed, launcher and distributed backend (gloo on CPU, nccl on GPU, a
CPU-capable DDP wrapper), resume, and the MLflow backend. The same for every run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pgd.run_layout import RUN_INFO_KEY, profile_results_dir


def apply_runtime(cfg, args, info: dict[str, Any]) -> None:
    """Work dir, seed, launcher / distributed backend, resume and the MLflow backend: the same for every run."""
    import torch

    cfg.work_dir = str(Path(args.work_dir).resolve())
    cfg[RUN_INFO_KEY] = dict(info)
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    cfg.launcher = args.launcher
    env = cfg.setdefault("env_cfg", {})
    env.setdefault("dist_cfg", {})
    # gloo on CPU-only hosts, nccl on GPUs: the same run then works on a laptop and on the cluster
    env["dist_cfg"]["backend"] = "nccl" if torch.cuda.is_available() else "gloo"
    if args.launcher != "none" and not torch.cuda.is_available():
        # mmengine passes device_ids=[LOCAL_RANK], which torch's DDP rejects for a CPU module
        cfg.model_wrapper_cfg = dict(type="CPUDistributedDataParallel", broadcast_buffers=False,
                                     find_unused_parameters=cfg.get("find_unused_parameters", False))
    cfg.resume = bool(args.resume)
    if args.resume:
        cfg.load_from = None  # None + resume=True: mmengine picks <work_dir>/last_checkpoint
    vis = cfg.get("visualizer") or dict(type="DetLocalVisualizer", vis_backends=[dict(type="LocalVisBackend")])
    # mmengine keeps one visualizer per name for the whole process: with mmdet's fixed 'visualizer' a second
    # Runner in the same process (tests, notebooks) would log into the first run's directory. Without a name
    # the Runner uses its timestamped experiment name.
    vis.pop("name", None)
    cfg.visualizer = vis
    if not args.no_mlflow:
        from pgd import tracking

        backends = [b for b in vis.get("vis_backends", [dict(type="LocalVisBackend")])
                    if b.get("type") not in tracking.MLFLOW_BACKEND_TYPES]
        results_dir = profile_results_dir(Path(args.work_dir), args.results, info["profile"])
        backend = tracking.mlflow_vis_backend(
            results_dir, info["profile"], info["run_id"],
            tags={**{k: info.get(k) for k in ("tables", "detector", "method", "role", "digest", "git_commit",
                                              "git_dirty")},
                  "mlflow.source.git.commit": info.get("git_commit")})
        if args.resume and (Path(args.work_dir) / "last_checkpoint").is_file():
            previous = tracking.find_run(results_dir, info["profile"], info["run_id"])
            if previous is not None:
                # one MLflow run per training run: the resumed losses continue the interrupted run's curves.
                # mlflow's start_run() reopens the run named by MLFLOW_RUN_ID (and clears the variable); params
                # stay those of the first process, since MLflow refuses to change a logged param (`resume` does)
                os.environ["MLFLOW_RUN_ID"] = previous.info.run_id
                backend["tracked_config_keys"] = []
        backends.append(backend)
        vis["vis_backends"] = backends
        cfg.visualizer = vis


def register_cpu_ddp() -> None:
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import MODEL_WRAPPERS

    if "CPUDistributedDataParallel" in MODEL_WRAPPERS.module_dict:
        return

    @MODEL_WRAPPERS.register_module()
    class CPUDistributedDataParallel(MMDistributedDataParallel):
        """MMDistributedDataParallel for CPU modules (gloo): torch's DDP wants device_ids=None there."""

        def __init__(self, module, device_ids=None, **kwargs):
            on_gpu = next(module.parameters()).is_cuda
            super().__init__(module=module, device_ids=device_ids if on_gpu else None, **kwargs)


def init_cpu_process_group(cfg) -> None:
    """Start gloo for a CPU-only torchrun job before the Runner does.

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` unconditionally, which fails on CPU-only
    builds; the Runner skips its own initialisation when a process group already exists.
    """
    import datetime

    import torch
    import torch.distributed as dist

    if torch.cuda.is_available() or dist.is_initialized():
        return
    timeout = cfg.get("env_cfg", {}).get("dist_cfg", {}).get("timeout")
    kwargs = {"timeout": datetime.timedelta(seconds=timeout)} if timeout else {}
    dist.init_process_group(backend="gloo", **kwargs)
