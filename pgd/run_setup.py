"""From `pgd train`'s command line to the run's composed config: a matrix row, explicit fields, or a config file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pgd.cli_common import parse_overrides
from pgd.errors import UserError
from pgd.run_layout import CONFIG_FILE, MODEL_FILE


class TrainError(UserError, RuntimeError):
    """Bad command line or inconsistent run directory."""


def _matrix_row(args):
    from pgd.matrix import MatrixError, load_matrix, with_extras

    try:   # the extra methods' runs too (pgd.matrix.with_extras: the `extras` target); a matrix run as it is
        matrix = load_matrix(args.matrix)
        return matrix[args.run] if args.run in matrix.runs else with_extras(matrix)[args.run]
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
