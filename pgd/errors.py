"""User errors: bad input that the person running a command can fix, reported as one message and exit status 2.

Every module's own error type for bad input (``ConfigCompositionError``, ``MatrixError``, ``TrainError``,
``EvalError``, ``CheckpointError``, ``AnnotationError``, the KD losses' ``ConfigError``, ...) also derives from
:class:`UserError`. ``pgd`` (pgd/cli.py) catches that base class: it prints ``pgd <command>: error: <message>`` and
exits 2, without a traceback. ``pgd --debug <command>`` (or ``--debug`` among a command's arguments, or
``PGD_DEBUG=1``) shows the traceback instead. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys

EXIT_USER_ERROR = 2
DEBUG_ENV = "PGD_DEBUG"


class UserError(Exception):
    """Bad input (command line, config, matrix, data, checkpoint): the message says what, where and how to fix."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report_user_error(prog: str, err: BaseException) -> int:
    """Print ``<prog>: error: <message>`` on stderr; returns the exit status for a user error."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return EXIT_USER_ERROR


class ConfigError(UserError, ValueError):
    """A KD method / detector / option combination that cannot work, raised before training starts."""
