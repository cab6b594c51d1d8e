"""Declarative taps: the intermediate tensors a KD loss reads, named by module path (as mmrazor's recorders).

Every distillation pass yields, per detector (teacher and student), a :class:`pgd.losses.base.FeatureSet`: the FPN
outputs (``neck``) and the head's raw outputs (``head_outs``) - what the forward computes anyway - plus one entry
per *tap*: the outputs of a named submodule, recorded by a forward hook during the pass. A loss declares its taps
(``BaseKDLoss.required_taps``: a class default, or ``taps=dict(<name>=<module path>)`` in its config), and the
distiller records exactly the union of them, so a method that reads only FPN features hooks nothing.

A tap spec is a module path (``'bbox_head.cls_convs.0'``), recorded once per FPN level in level order (head modules
run once per level), or ``dict(module=<path>, per_level=False)`` for a module that runs once per pass (its single
output, e.g. ``'backbone.layer4'``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from pgd.errors import ConfigError

BUILT_IN = ('neck', 'head_outs')   # always in a FeatureSet: not taps


@dataclass(frozen=True)
class Tap:
    name: str
    module: str
    per_level: bool = True


def parse_taps(spec: Mapping[str, Any] | None, owner: str) -> dict[str, Tap]:
    """``{name: path | dict(module=path, per_level=bool)}`` -> ``{name: Tap}``; refuses malformed entries."""
    out: dict[str, Tap] = {}
    for name, value in dict(spec or {}).items():
        if name in BUILT_IN:
            raise ConfigError(f'{owner}: tap {name!r} is built in (every FeatureSet has {BUILT_IN}); drop it')
        if isinstance(value, str):
            value = dict(module=value)
        if not isinstance(value, Mapping) or not isinstance(value.get('module'), str) or \
                set(value) - {'module', 'per_level'} or not isinstance(value.get('per_level', True), bool):
            raise ConfigError(f"{owner}: tap {name!r} must be a module path or dict(module=<path>, "
                              f"per_level=<bool>), got {value!r}")
        out[name] = Tap(name, value['module'], value.get('per_level', True))
    return out


def merge_taps(per_loss: Mapping[str, Mapping[str, Tap]]) -> dict[str, Tap]:
    """The union of several losses' taps; one name must mean one module everywhere."""
    out: dict[str, Tap] = {}
    for owner, taps in per_loss.items():
        for name, tap in taps.items():
            if name in out and out[name] != tap:
                raise ConfigError(f'tap {name!r} is {out[name]} for one KD loss and {tap} for {owner}: give one of '
                                  'them another name')
            out[name] = tap
    return out


def _fp32(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, (tuple, list)):
        return type(output)(_fp32(o) for o in output)
    return output


class TapRecorder:
    """Forward hooks for a set of taps on one detector; they record only while :meth:`recording` is active (not in
    predict / validation passes)."""

    def __init__(self, detector: nn.Module, taps: Mapping[str, Tap], owner: str) -> None:
        self.taps = dict(taps)
        self.owner = owner
        self.outputs: dict[str, list[Tensor]] = {name: [] for name in self.taps}
        self.armed = False
        self._handles = []
        for name, tap in self.taps.items():
            try:
                module = detector.get_submodule(tap.module)
            except AttributeError as err:
                raise ConfigError(f'{owner} {type(detector).__name__} has no module {tap.module!r} for tap '
                                  f'{name!r} ({err})') from None
            self._handles.append(module.register_forward_hook(self._record(self.outputs[name])))

    def _record(self, store: list[Tensor]):
        def hook(module, inputs, output):
            if self.armed:
                # fp32 even when the module runs under autocast (pgd.models.feature_autocast): KD losses are fp32
                store.append(_fp32(output))
        return hook

    def clear(self) -> None:
        for store in self.outputs.values():
            store.clear()

    @contextmanager
    def recording(self):
        self.clear()
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    def take(self, num_levels: int) -> dict[str, Any]:
        """Each tap's outputs of the pass just recorded (a per-level list, or the single output), then clear."""
        out: dict[str, Any] = {}
        for name, tap in self.taps.items():
            got = list(self.outputs[name])
            expected = num_levels if tap.per_level else 1
            if len(got) != expected:
                runs = 'once per FPN level' if tap.per_level else 'once'
                raise RuntimeError(f'{self.owner} tap {name!r} ({tap.module}) recorded {len(got)} outputs in one '
                                   f'pass, expected {expected}: the module did not run {runs}')
            out[name] = got if tap.per_level else got[0]
        self.clear()
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
