"""`pgd train`: one run of the experiment matrix (or an explicit detector) on mmengine's Runner.

The work dir (docs/ARCHITECTURE.md "Run directory") receives ``config.py`` (dumped before training and re-read,
so the file is exactly what trains and what ``pgd eval`` rebuilds), mmengine's ``iter_*.pth`` /
``last_checkpoint`` (for ``--resume``), and at the end ``model.pth``: ``{'state_dict', 'meta'}`` of the plain
detector. For a distilled run the state dict is the student's only (no teacher, no KD-loss modules) and
``meta['model_config']`` holds the student's model config (with the run's ``custom_imports``) as Python
source, so ``Config.fromstring(meta['model_config'], '.py').model`` builds a plain mmdet detector that loads the
state dict with ``strict=True`` (``pgd.train.plain_model_config`` gives the same dict from ``config.py``).
Everything in the file is weights_only-loadable (tensors, dicts, strings, numbers).
"""
from __future__ import annotations

import argparse
import ast
import copy
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgd.atomic import atomic_write_text
from pgd.errors import UserError, debug_enabled, report_user_error

RUN_INFO_KEY = "run_info"  # top-level config key: run id, profile and the MLflow tags of this run
MODEL_FILE = "model.pth"
CONFIG_FILE = "config.py"


class TrainError(UserError, RuntimeError):
    """Bad command line or inconsistent run directory."""


# ----------------------------------------------------------------------------------------------------------
# command line

def build_parser() -> argparse.ArgumentParser:
    from pgd.matrix import BACKBONES, DETECTORS, METHODS

    p = argparse.ArgumentParser(prog="pgd train", description=__doc__.split("\n\n")[0],
                                epilog="examples: `pgd train --run atss_r50_pgd` (a matrix row); "
                                       "`pgd train --detector atss --backbone r50 --role student --method pgd "
                                       "--teacher-run atss_r101_teacher --work-dir D`")
    src = p.add_argument_group("what to train (a matrix row, explicit fields, or an mmengine config file)")
    src.add_argument("--run", help="run id: a row of the experiment matrix (configs/experiments.yaml)")
    src.add_argument("--matrix", default=None,
                     help="experiment matrix (default $PGD_MATRIX, else configs/experiments.yaml)")
    src.add_argument("--config", help="an mmengine config file to train as it is (no composition)")
    src.add_argument("--detector", help=" | ".join(DETECTORS))
    src.add_argument("--backbone", help=" | ".join(BACKBONES))
    src.add_argument("--role", choices=["teacher", "student"],
                     help="teacher (the profile's teacher schedule) or student; needed with --detector")
    src.add_argument("--method", help=f"KD method: {' | '.join(METHODS)} (configs/distill/<method>.py); omit for "
                                      "a plain detector")
    src.add_argument("--teacher-run", help="run id of the teacher (its run dir is beside this one)")
    src.add_argument("--teacher-dir", help="teacher run directory (overrides --teacher-run's location)")
    src.add_argument("--dataset", default=None, help="coco | crowdhuman (default: coco or the matrix row's)")
    p.add_argument("--profile", default="mini", help="mini | paper (default %(default)s)")
    p.add_argument("--results", default=os.environ.get("PGD_RESULTS", "results"),
                   help="results root: default run dir <results>/<profile>/runs/<run_id>, MLflow store "
                        "<results>/<profile>/mlflow.db unless the work dir sits in such a tree (default %(default)s)")
    p.add_argument("--work-dir", help="run directory (default <results>/<profile>/runs/<run_id>)")
    p.add_argument("--run-id", help="run name for MLflow with explicit fields (default: the work dir's name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, value parsed as a Python literal (repeatable)")
    p.add_argument("--eval", action="store_true",
                   help="then test model.pth in this process and write metrics.json, as `pgd eval --run-dir` "
                        "does (single-process runs only)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the work dir")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="mmengine launcher: pytorch under torchrun, slurm under srun (default %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed; a matrix row's run id gets _s<seed> for seeds > 0 (default %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $PGD_THREADS, else torch's default)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log this run to MLflow")
    return p


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['a.b=3', 'c=[1, 2]', 'd=adamw']`` -> ``{'a.b': 3, 'c': [1, 2], 'd': 'adamw'}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # bare words are strings: --set optim_wrapper.optimizer.type=AdamW
        out[key.strip()] = value
    return out


def set_threads(threads: int | None) -> None:
    import torch

    if threads is None and os.environ.get("PGD_THREADS"):
        try:
            threads = int(os.environ["PGD_THREADS"])
        except ValueError as err:
            raise TrainError(f"PGD_THREADS must be an integer, got {os.environ['PGD_THREADS']!r}") from err
    if threads is None:
        return
    if threads < 1:
        raise TrainError(f"thread count must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    # data-loader workers and OpenCV read these when they start
    os.environ["OMP_NUM_THREADS"] = str(threads)


# ----------------------------------------------------------------------------------------------------------
# composing the config

def _matrix_row(args):
    from pgd.matrix import MatrixError, load_matrix, with_extras

    try:   # the extra methods' runs too (pgd.matrix.with_extras: the `extras` target)
        return with_extras(load_matrix(args.matrix))[args.run]
    except MatrixError as err:
        raise TrainError(str(err)) from err


def _teacher_spec(args, teacher_run: str | None) -> dict[str, str] | None:
    if args.teacher_dir is None and teacher_run is None:
        return None
    from pgd.matrix import run_dir

    # teachers are trained at seed 0 only; every seed of a student learns from that run
    tdir = Path(args.teacher_dir) if args.teacher_dir else run_dir(args.profile, teacher_run, 0, args.results)
    # absolute, so the run's config.py still finds its teacher when read from another working directory
    spec = {"config": str((tdir / CONFIG_FILE).resolve()), "checkpoint": str((tdir / MODEL_FILE).resolve())}
    for path in spec.values():
        if not Path(path).is_file():
            raise TrainError(f"teacher file missing: {path} (train the teacher run first)")
    return spec


def compose(args) -> tuple[Any, dict[str, Any]]:
    """(mmengine Config, run_info) from the command line."""
    from mmengine.config import Config

    overrides = parse_overrides(args.overrides)
    if args.config:
        if args.run or args.detector:
            raise TrainError("--config trains a config file as it is; do not combine it with --run/--detector")
        if not Path(args.config).is_file():
            raise TrainError(f"config file not found: {args.config}")
        cfg = Config.fromfile(args.config)
        run_id = args.run_id or Path(args.work_dir or args.config).stem
        if args.work_dir is None:
            raise TrainError("--config needs --work-dir")
        from pgd.config import apply_overrides

        apply_overrides(cfg, overrides)
        info = {"run_id": run_id, "profile": args.profile, "detector": "", "method": "", "role": "",
                "dataset": "", "tables": ""}
        return cfg, info

    from pgd.config import compose_config

    if args.run:
        from pgd.matrix import run_name

        clash = [f"--{n.replace('_', '-')}" for n in ("detector", "backbone", "role", "method", "teacher_run")
                 if getattr(args, n) is not None]
        if clash:
            raise TrainError(f"--run {args.run} takes its fields from the matrix; drop {' '.join(clash)}")

        row = _matrix_row(args)
        fields = {k: getattr(row, k) for k in ("detector", "backbone", "role", "dataset", "method", "teacher")}
        fields["method_overrides"] = dict(row.method_overrides or {}) or None
        run_id = args.run_id or run_name(row.id, args.seed)
        tables = list(row.tables)
        if args.dataset and args.dataset != row.dataset:
            raise TrainError(f"--dataset {args.dataset} contradicts run {row.id}'s dataset {row.dataset}")
    else:
        missing = [f"--{n}" for n in ("detector", "backbone", "role") if getattr(args, n) is None]
        if missing:
            raise TrainError(f"give --run <id>, --config FILE, or all of --detector --backbone --role "
                             f"(missing {' '.join(missing)})")
        if args.method and not (args.teacher_run or args.teacher_dir):
            raise TrainError(f"--method {args.method} needs --teacher-run or --teacher-dir")
        fields = {"detector": args.detector, "backbone": args.backbone, "role": args.role,
                  "dataset": args.dataset, "method": args.method, "teacher": args.teacher_run,
                  "method_overrides": None}
        if args.work_dir is None and args.run_id is None:
            raise TrainError("explicit fields need --work-dir or --run-id")
        run_id = args.run_id or Path(args.work_dir).name
        tables = []
    dataset = args.dataset or fields["dataset"] or "coco"
    work_dir = args.work_dir or str(Path(args.results) / args.profile / "runs" / run_id)
    teacher = _teacher_spec(args, fields["teacher"]) if fields["method"] else None
    cfg = compose_config(
        fields["detector"], fields["backbone"], args.profile, fields["role"], dataset=dataset,
        method=fields["method"], method_overrides=fields["method_overrides"], teacher=teacher,
        work_dir=work_dir, seed=args.seed, overrides=overrides)
    info = {"run_id": run_id, "profile": args.profile, "detector": fields["detector"],
            "backbone": fields["backbone"], "method": fields["method"] or "none", "role": fields["role"],
            "dataset": dataset, "tables": ",".join(tables)}
    args.work_dir = work_dir
    return cfg, info


def run_recipe_of(cfg, profile: str) -> dict[str, Any]:
    """The composed run's recipe (pgd.provenance): its teacher enters through the digest recorded in the teacher's
    run directory, its backbone through the profile's pretraining recipe."""
    from pgd.config import ConfigCompositionError
    from pgd.provenance import pretrain_recipe, recorded_digest, run_recipe

    teacher = (cfg.get("model") or {}).get("teacher") or {}
    teacher_digest = recorded_digest(Path(teacher["config"]).parent) if teacher.get("config") else None
    try:
        pretrain = pretrain_recipe(profile)
    except ConfigCompositionError:  # --config FILE with a --profile that names no profile file
        pretrain = None
    return run_recipe(cfg, pretrain, teacher_digest)


def check_pretrained_backbone(cfg) -> None:
    """Fail before anything is built when the backbone's local pretrained checkpoint is missing (the mini profile
    loads `pgd pretrain`'s output), naming the file and how to make it, not deep inside init_weights."""
    from pgd.config import local_pretrained_checkpoint

    model = cfg.model
    ckpt = local_pretrained_checkpoint((model.get("student") or model).get("backbone") or {})
    if ckpt and not Path(ckpt).is_file():
        raise TrainError(
            f"pretrained backbone checkpoint not found: {ckpt}. Make it with `pgd pretrain --backbone "
            f"{Path(ckpt).stem} --profile <profile> --out {ckpt}` (snakemake's pretrain_backbone rule does), or point "
            f"$PGD_PRETRAINED_DIR or --set pretrained_dir=DIR at the folder that holds it")


DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def _data_hint(cfg) -> str:
    """How to provide a run's missing dataset: generate the synthetic one, or point the real one's root at it."""
    from pgd.config import ConfigCompositionError, load_profile
    from pgd.workflow_config import DATASET_LAYOUT

    run = cfg.get("pgd") or {}
    dataset = run.get("dataset")
    if dataset not in DATASET_LAYOUT:
        return "point --set data_root=DIR at the dataset"
    try:
        synthetic = str(load_profile(run.get("profile")).datasets.get(dataset, "")).startswith("synth")
    except ConfigCompositionError:
        synthetic = False
    if synthetic:
        return (f"generate it with `pgd data {dataset} --out DIR` (Snakemake's data rules do) and pass "
                f"--set data_root=DIR")
    key, layout = DATASET_LAYOUT[dataset]
    env = "PGD_COCO_ROOT" if dataset == "coco" else "PGD_CROWDHUMAN_ROOT"
    return (f"point ${env} (Snakemake: --config {key}=DIR) or --set data_root=DIR at the {dataset} folder, "
            f"which holds {layout}")


def check_data_files(cfg, loaders=DATALOADERS) -> None:
    """Fail before the Runner is built (and before its environment dump) when an annotation file or image folder
    of the run's datasets is missing, naming the file and how to provide it."""
    for key in loaders:
        ds = (cfg.get(key) or {}).get("dataset") or {}
        if "ann_file" not in ds:
            continue   # a wrapper dataset (ConcatDataset, ...): mmdet reports its own errors
        root = str(ds.get("data_root") or "")
        ann = Path(root, ds["ann_file"])
        img = (ds.get("data_prefix") or {}).get("img")
        for path, what in ((ann, "annotation file"), (Path(root, img) if img else None, "image folder")):
            if path is not None and not (path.is_file() if what == "annotation file" else path.is_dir()):
                raise TrainError(f"{key}: {what} not found: {path}; {_data_hint(cfg)}")


def check_distillation(cfg) -> None:
    """Fail before the Runner is built when a distilled run cannot work: a KD loss that does not apply to the
    detector (LD on ATSS), a keyword its class does not take, or a teacher checkpoint that is not one."""
    import inspect

    from mmdet.registry import MODELS

    import pgd.losses  # noqa: F401  (registers the KD losses)
    from pgd.checkpoint import check_checkpoint
    from pgd.suggest import did_you_mean
    from pgd.vocab import kd_loss_keywords, kd_loss_types

    model = cfg.model
    if model.get("type") != "DistillDetector":
        return
    detector = (cfg.get("pgd") or {}).get("detector")
    for loss_cfg in model.get("kd_losses") or []:
        loss_cfg = dict(loss_cfg)
        cls = MODELS.get(loss_cfg.pop("type", None))
        if cls is None:
            continue   # the distiller names an unregistered type itself
        if detector and hasattr(cls, "check_detector"):
            cls.check_detector(detector)   # ConfigError (a UserError) with the reason
        if cls.__name__ in kd_loss_types():   # PGDLoss(**settings) included: its keys are PGDSettings' fields
            allowed = kd_loss_keywords(cls.__name__)
            for key in loss_cfg:
                if key not in allowed:
                    raise TrainError(f"KD loss {cls.__name__} has no option {key!r}{did_you_mean(key, allowed)} "
                                     f"(model.kd_losses of the run's config); its options: "
                                     f"{', '.join(sorted(allowed))}")
        else:
            try:
                inspect.signature(cls).bind(**loss_cfg)
            except TypeError as err:
                raise TrainError(f"KD loss {cls.__name__}: {err} (model.kd_losses of the run's config)") from None
    teacher = model.get("teacher") or {}
    if teacher.get("checkpoint"):
        check_checkpoint(teacher["checkpoint"])


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
                # stay those of the first session, since MLflow refuses to change a logged param (`resume` does)
                os.environ["MLFLOW_RUN_ID"] = previous.info.run_id
                backend["tracked_config_keys"] = []
        backends.append(backend)
        vis["vis_backends"] = backends
        cfg.visualizer = vis


def profile_results_dir(work_dir: Path, results: str, profile: str) -> Path:
    """``<results>/<profile>``, the folder of the profile's mlflow.db.

    A run dir laid out as the contract says (``<results>/<profile>/runs/<run>``) names it itself, so a workflow
    that moves the results root needs to tell only ``--work-dir``.
    """
    work_dir = Path(work_dir).resolve()
    if work_dir.parent.name == "runs" and work_dir.parent.parent.name == profile:
        return work_dir.parent.parent
    return Path(results) / profile


# ----------------------------------------------------------------------------------------------------------
# model.pth

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
    model_cfg = Config(_to_plain(plain))
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


def _to_plain(obj: Any) -> Any:
    """ConfigDict / tuples -> plain dicts / lists of builtins (what weights_only unpickling accepts)."""
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _dataset_meta(runner) -> dict[str, Any]:
    try:
        meta = runner.train_dataloader.dataset.metainfo
    except Exception:  # noqa: BLE001  (a dataset without metainfo just means no class names in meta)
        return {}
    return {"dataset_meta": _to_plain({k: v for k, v in meta.items() if k in ("classes", "palette")})}


# ----------------------------------------------------------------------------------------------------------
# distributed on CPU

def _register_cpu_ddp() -> None:
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


def _init_cpu_process_group(cfg) -> None:
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


# ----------------------------------------------------------------------------------------------------------

def train(args) -> Path:
    from mmengine.config import Config
    from mmengine.dist import is_main_process
    from mmengine.runner import Runner

    from pgd.checkpoint import install_safe_globals
    from pgd.disk import check_free_space
    from pgd.provenance import digest, git_state, write_provenance

    set_threads(args.threads)
    if args.eval and (args.launcher != "none" or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise TrainError("--eval tests in the training process, which a distributed run does not have to "
                         "itself: run `pgd eval --run-dir <work dir>` after it")
    cfg, info = compose(args)
    # user errors that would otherwise surface inside the Runner, after mmengine's environment and config dump
    check_pretrained_backbone(cfg)
    check_data_files(cfg)
    check_distillation(cfg)
    recipe = run_recipe_of(cfg, args.profile)
    info.update(digest=digest(recipe), **{f"git_{k}": v for k, v in git_state().items()})
    apply_runtime(cfg, args, info)
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / CONFIG_FILE
    text = cfg.pretty_text
    # under torchrun every rank composes the same config; only rank 0 writes it (the process group does not
    # exist yet, so is_main_process() would be True everywhere). Ranks never read the file back: on --resume an
    # older config.py is there and a rank could read it before rank 0 replaced it.
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_text(config_path, text)
        write_provenance(work_dir, recipe)
    # what trains is the dumped text parsed back, so config.py is exactly what `pgd eval` rebuilds
    cfg = Config(Config.fromstring(text, ".py").to_dict(), cfg_text=text, filename=str(config_path))
    _register_cpu_ddp()
    if cfg.launcher == "pytorch":
        _init_cpu_process_group(cfg)

    # resume / load_from call torch.load inside mmengine; its checkpoints pickle message-hub objects that
    # torch >= 2.6's weights_only loader refuses unless allow-listed (pgd.checkpoint owns the list)
    install_safe_globals()
    try:
        runner = Runner.from_cfg(cfg)
        if is_main_process():   # only rank 0 writes checkpoints (the process group exists once the Runner does)
            check_free_space(runner.model, cfg, work_dir)
        runner.train()
    finally:
        os.environ.pop("MLFLOW_RUN_ID", None)  # never leak into a later run of this process
    model_path = work_dir / MODEL_FILE
    if is_main_process():
        export_model(runner.model, cfg, model_path,
                     {"iter": runner.iter, "epoch": runner.epoch, "seed": args.seed, **_dataset_meta(runner)})
    if args.eval:
        from pgd.eval import evaluate_and_log

        del runner  # the training runner (and a teacher) need not stay in memory while testing
        record, out = evaluate_and_log(work_dir, args.results, not args.no_mlflow)
        print(f"pgd train: wrote {out}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "dataset"))
    return model_path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = train(args)
    except UserError as err:   # bad input: one message (pgd --debug shows the traceback)
        if debug_enabled():
            raise
        return report_user_error("pgd train", err)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"pgd train: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
