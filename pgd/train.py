"""`pgd train`: one run of the experiment matrix (or an explicit detector) on mmengine's Runner.

Compose the run's config (pgd.run_setup), check it before anything is built (pgd.preflight), record its identity
(pgd.provenance), set up the runtime (pgd.launch), train, and write ``model.pth`` (pgd.run_layout); with ``--eval``
test it in the same process (pgd.evaluation.run_eval).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pgd.atomic import atomic_write_text
from pgd.cli_common import set_threads
from pgd.errors import UserError, debug_enabled, report_user_error
from pgd.launch import apply_runtime, init_cpu_process_group, register_cpu_ddp
from pgd.preflight import check_data_files, check_distillation, check_pretrained_backbone
from pgd.run_layout import CONFIG_FILE, MODEL_FILE, dataset_meta, export_model
from pgd.run_setup import TrainError, compose, run_recipe_of


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
    register_cpu_ddp()
    if cfg.launcher == "pytorch":
        init_cpu_process_group(cfg)

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
                     {"iter": runner.iter, "epoch": runner.epoch, "seed": args.seed, **dataset_meta(runner)})
    if args.eval:
        from pgd.evaluation.run_eval import evaluate_and_log

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
