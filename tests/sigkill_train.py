"""`pgd train` that SIGKILLs itself right after a given iteration: ``python sigkill_train.py N <pgd train args>``.

A kill from outside lands wherever the scheduler happens to be; this one lands after iteration N's step and its
checkpoint save (if N is a checkpoint iteration), so a test knows exactly which checkpoint the resume starts from.
Nothing runs after the kill: no finally blocks, no model.pth, no MLflow run end, as with a killed job.
"""
from __future__ import annotations

import os
import signal
import sys

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner


@HOOKS.register_module()
class SigkillAfterIterHook(Hook):
    priority = "LOWEST"  # after the CheckpointHook (VERY_LOW) has saved this iteration

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:  # runner.iter counts the iterations finished before this one
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    iteration, args = int(argv[0]), argv[1:]
    from_cfg = Runner.from_cfg.__func__

    def with_kill_hook(cls, cfg):
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [dict(type="SigkillAfterIterHook",
                                                                       iteration=iteration)]
        return from_cfg(cls, cfg)

    Runner.from_cfg = classmethod(with_kill_hook)
    from pgd.cli import main as pgd_main

    return pgd_main(["train", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
