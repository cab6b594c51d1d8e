"""Command-line helpers shared by the `pgd` commands: ``--set KEY=VALUE`` parsing and torch's thread count."""
from __future__ import annotations

import ast
import os
from typing import Any

from pgd.errors import UserError


class UsageError(UserError, ValueError):
    """A malformed command-line value (``--set`` item, thread count)."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['a.b=3', 'c=[1, 2]', 'd=adamw']`` -> ``{'a.b': 3, 'c': [1, 2], 'd': 'adamw'}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
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
            raise UsageError(f"PGD_THREADS must be an integer, got {os.environ['PGD_THREADS']!r}") from err
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"thread count must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    # data-loader workers and OpenCV read these when they start
    os.environ["OMP_NUM_THREADS"] = str(threads)
