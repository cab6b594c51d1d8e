"""How much disk a training run writes, checked before it starts.

A run that meets a full disk dies inside mmengine's CheckpointHook with ``OSError: [Errno 28]`` after it has
trained up to that checkpoint, and a Snakemake DAG then stops with it. The numbers are known before the first
step: the model's state dict, the optimizer's per-parameter state, how many resume checkpoints the hook keeps at
once, and the final ``model.pth``. :func:`check_free_space` compares them with the free space of the work dir and
fails early with a message that names both.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from pgd.errors import UserError

__all__ = ["DiskSpaceError", "checkpoint_bytes", "checkpoints_kept", "required_bytes", "check_free_space"]

# per-parameter tensors an optimizer keeps in its state dict (SGD: momentum buffer; Adam family: two moments)
_OPTIMIZER_SLOTS = {"SGD": 1, "Adam": 2, "AdamW": 2, "RMSprop": 1, "Adagrad": 1}


class DiskSpaceError(UserError, RuntimeError):
    """The work dir's file system has less free space than the run will write."""


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_slots(optim_wrapper_cfg: Mapping[str, Any] | None) -> int:
    """Per-parameter state tensors of the configured optimizer (SGD without momentum keeps none)."""
    optimizer = dict((optim_wrapper_cfg or {}).get("optimizer") or {})
    kind = str(optimizer.get("type", "SGD")).split(".")[-1]
    if kind == "SGD":
        return 1 if optimizer.get("momentum", 0) else 0
    return _OPTIMIZER_SLOTS.get(kind, 2)   # an unknown optimizer: assume Adam-like, the larger estimate


def _optimizer_state_bytes(model, optim_wrapper_cfg: Mapping[str, Any] | None) -> int:
    return optimizer_slots(optim_wrapper_cfg) * _tensor_bytes(p for p in model.parameters() if p.requires_grad)


def checkpoint_bytes(model, optim_wrapper_cfg: Mapping[str, Any] | None = None) -> int:
    """Bytes of one resume checkpoint: the state dict (a distiller's teacher is not in it) plus the optimizer's
    state for every trainable parameter. Meta and message-hub entries are kilobytes and are left out."""
    return _tensor_bytes(model.state_dict().values()) + _optimizer_state_bytes(model, optim_wrapper_cfg)


def checkpoints_kept(hook_cfg: Mapping[str, Any] | None, train_cfg: Mapping[str, Any] | None) -> int:
    """The most resume checkpoints on disk at one time under mmengine's CheckpointHook settings.

    The hook writes a new checkpoint before it deletes the oldest beyond ``max_keep_ckpts``, so ``keep + 1`` files
    exist for a moment."""
    hook, loop = dict(hook_cfg or {}), dict(train_cfg or {})
    length = loop.get("max_epochs" if hook.get("by_epoch", True) else "max_iters")
    if length is None:             # hook and loop count in different units: one checkpoint at least
        length = hook.get("interval", 1)
    interval = int(hook.get("interval", -1))
    save_last = hook.get("save_last", True)
    if interval <= 0:
        saves = 1 if save_last else 0
    else:
        saves = int(length) // interval + (1 if save_last and int(length) % interval else 0)
    keep = int(hook.get("max_keep_ckpts", -1))
    return saves if keep <= 0 else min(saves, keep + 1)


def required_bytes(model, cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """(total, one checkpoint, checkpoints kept): what the run writes at its peak, ``model.pth`` included."""
    final = _tensor_bytes(model.state_dict().values())      # model.pth: the state dict alone
    one = final + _optimizer_state_bytes(model, cfg.get("optim_wrapper"))
    kept = checkpoints_kept((cfg.get("default_hooks") or {}).get("checkpoint"), cfg.get("train_cfg"))
    return kept * one + final, one, kept


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def check_free_space(model, cfg: Mapping[str, Any], work_dir: str | Path) -> int:
    """Raise :class:`DiskSpaceError` when ``work_dir`` has less free space than the run will write; return the
    estimate in bytes otherwise."""
    need, one, kept = required_bytes(model, cfg)
    # on --resume the checkpoints already there are deleted as new ones come, so they count as free
    present = sum(f.stat().st_size for pattern in ("iter_*.pth", "epoch_*.pth") for f in Path(work_dir).glob(pattern))
    free = shutil.disk_usage(work_dir).free + present
    if free < need:
        raise DiskSpaceError(
            f"not enough disk space in {work_dir}: {_mb(free)} free, and the run writes about {_mb(need)} "
            f"({kept} resume checkpoint(s) of {_mb(one)} at a time, then model.pth). Free some space, or keep fewer "
            f"checkpoints: --set +default_hooks.checkpoint.max_keep_ckpts=1")
    return need
