"""`pgd eval`: test a run's ``model.pth`` with the evaluator of its ``config.py`` and write ``metrics.json``
(pgd.evaluation.run_eval); the same numbers are logged to the run's MLflow run (found by its name).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pgd.cli_common import parse_overrides, set_threads
from pgd.errors import UserError, debug_enabled, report_user_error
from pgd.evaluation.run_eval import EvalError, evaluate_and_log  # noqa: F401  (EvalError: the command's error type)
from pgd.run_layout import MODEL_FILE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgd eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True,
                   help="run directory holding config.py and model.pth, e.g. results/mini/runs/atss_r50_pgd")
    p.add_argument("--checkpoint", help=f"weights to test (default <run-dir>/{MODEL_FILE})")
    p.add_argument("--out", help="metrics file (default <run-dir>/metrics.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override for testing, e.g. test_dataloader.batch_size=1 (repeatable)")
    p.add_argument("--results", default=os.environ.get("PGD_RESULTS", "results"),
                   help="results root holding <profile>/mlflow.db, when the run dir is not under "
                        "<results>/<profile>/runs/ (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $PGD_THREADS)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the metrics to MLflow")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        set_threads(args.threads)
        record, out = evaluate_and_log(Path(args.run_dir), args.results, not args.no_mlflow,
                                       Path(args.checkpoint) if args.checkpoint else None,
                                       Path(args.out) if args.out else None, parse_overrides(args.overrides))
    except UserError as err:   # bad input: one message (pgd --debug shows the traceback)
        if debug_enabled():
            raise
        return report_user_error("pgd eval", err)
    print(f"pgd eval: wrote {out}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "dataset"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
