"""`pgd` command line: a thin dispatcher.

Each sub-command lives in its own module exposing ``main(argv: list[str] | None) -> int``; modules are
imported lazily so that `pgd data ...` does not pay for importing mmdet.

User errors (:class:`pgd.errors.UserError`: bad input, a missing file, a wrong combination) print one message and
exit 2; ``pgd --debug <command> ...`` (or ``--debug`` among the command's arguments) shows their traceback. Any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import os
import sys

from pgd.errors import DEBUG_ENV, UserError, debug_enabled, report_user_error

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("pgd.data.cli", "generate / validate the embedded synthetic datasets"),
    "pretrain": ("pgd.pretrain", "pretrain a backbone on synthetic shape classification (mini's ImageNet)"),
    "train": ("pgd.train", "train a detector or a distilled student (mmengine Runner)"),
    "eval": ("pgd.eval", "evaluate a run's model.pth and write metrics.json"),
    "pilot": ("pgd.evaluation.pilot", "Fig. 3: AP after masking the top-X%% quality predictions"),
    "heatmap": ("pgd.evaluation.heatmap", "Fig. 2: per-image teacher quality heatmaps"),
    "teacher-cache": ("pgd.build_teacher_cache", "save a teacher's outputs on its students' training set"),
    "table": ("pgd.report.tables", "render a paper table (LaTeX + CSV) from run metrics"),
    "figure": ("pgd.report.figures", "render a paper figure (PNG + PDF)"),
    "report": ("pgd.report.page", "write the per-profile report page"),
    "status": ("pgd.status", "per run of a profile: done / stale / running / failed / missing"),
}


def _usage() -> str:
    lines = ["usage: pgd [--version] [--debug] <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_.replace('%%', '%')}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`pgd <command> --help` lists a command's options and their defaults.",
              "--debug: show the traceback of a user error (normally one message and exit status 2)"]
    return "\n".join(lines)


def _version() -> str:
    from pgd import __version__

    return f"pgd {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        # before the command or among its arguments; the commands' own handlers read it from the environment
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(_version())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from pgd.suggest import did_you_mean

        print(f"pgd: unknown command {name!r}{did_you_mean(name, COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except UserError as err:
        if debug_enabled():
            raise
        return report_user_error(f"pgd {name}", err)


if __name__ == "__main__":
    sys.exit(main())
