"""Mixed precision for the convolutional trunk only: backbone, neck and dense head run under bf16 autocast while
training; their outputs are cast back to fp32, so label assignment, box decoding and every loss (detection and KD)
stay in fp32.

Why not mmengine's AmpOptimWrapper: it refuses to run without CUDA, and it puts the whole forward under autocast,
losses included. Box decoding and IoU in bf16 (8-bit mantissa: +-1 px at 128-256 px) would blur the regression
targets and PGD's quality score; the convolutions are where the time goes. Measured on this 2-core CPU (avx512_bf16),
ATSS R50 train step at 128 px, batch 4: fp32 1.39-1.47 s, trunk in bf16 ~0.85 s, everything in bf16 0.82-0.85 s.

The hook wraps ``forward`` of every detector's ``backbone``, ``neck`` and ``bbox_head`` (the student's and, in a
DistillDetector, the teacher's) when training starts and unwraps them when it ends; the wrappers autocast only
during training iterations, so validation and testing run in fp32. Parameters, gradients and optimiser state stay
fp32 (autocast casts copies), so checkpoints are unchanged.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from torch import nn

TRUNK_PARTS = ('backbone', 'neck', 'bbox_head')
DTYPES = {'bfloat16': torch.bfloat16}  # float16 would need a loss scaler against underflow: not offered


def to_float32(value: Any) -> Any:
    """``value`` with every low-precision floating tensor (nested in tuples / lists / dicts) cast to fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, tuple) and hasattr(value, '_fields'):  # namedtuple
        return type(value)(*(to_float32(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    return value


def trunk_modules(model: nn.Module) -> list[nn.Module]:
    """The backbone / neck / bbox_head of every detector inside ``model`` (a teacher included), each once."""
    from mmdet.models.detectors import BaseDetector

    found: dict[int, nn.Module] = {}
    nets = list(model.modules())
    # a DistillDetector keeps its teacher outside the module tree (not trained, not in the state dict)
    nets += [m.teacher for m in nets if isinstance(getattr(m, 'teacher', None), nn.Module)]
    for module in nets:
        if isinstance(module, BaseDetector):
            for part in TRUNK_PARTS:
                sub = getattr(module, part, None)
                if isinstance(sub, nn.Module):
                    found.setdefault(id(sub), sub)
    return list(found.values())


@HOOKS.register_module()
class FeatureAutocastHook(Hook):
    """Train the detector's convolutional trunk under autocast (see the module docstring).

    Args:
        dtype: 'bfloat16' (CPUs with avx512_bf16 / AMX, and Ampere or newer GPUs).
    """

    priority = 'VERY_HIGH'

    def __init__(self, dtype: str = 'bfloat16') -> None:
        if dtype not in DTYPES:
            raise ValueError(f'FeatureAutocastHook: dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
        self.dtype = DTYPES[dtype]
        self.active = False
        self._wrapped: list[nn.Module] = []

    def wrap(self, model: nn.Module) -> None:
        for module in trunk_modules(model):
            if 'forward' in vars(module):
                continue  # already wrapped (or patched by someone else: leave it alone)
            module.forward = self._autocast_forward(module, module.forward)
            self._wrapped.append(module)

    def unwrap(self) -> None:
        for module in self._wrapped:
            del module.forward
        self._wrapped.clear()

    def _autocast_forward(self, module: nn.Module, forward):
        @functools.wraps(forward)
        def wrapped(*args, **kwargs):
            if not self.active:
                return forward(*args, **kwargs)
            # the module's own device: a head's input is a tuple of maps, not a tensor
            device = next(module.parameters()).device.type
            with torch.autocast(device_type=device, dtype=self.dtype):
                out = forward(*args, **kwargs)
            return to_float32(out)
        return wrapped

    def before_train(self, runner) -> None:
        self.wrap(runner.model)  # trunk_modules walks modules(), which reach through a DDP wrapper

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.active = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.active = False

    def after_train(self, runner) -> None:
        self.active = False
        self.unwrap()
