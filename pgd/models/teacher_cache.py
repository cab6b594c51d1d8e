"""The teacher's outputs on every training image, computed once and read back in each distillation step.

A student of the mini profile trains at one fixed scale with random horizontal flips, and its teacher is frozen
(eval mode, fixed BN): what the teacher computes for a sample - the FPN outputs, the head's raw outputs and the
KD losses' taps - is a function of (image, flip) alone. `pgd teacher-cache` runs the teacher once over the training
set in both flips, through the student's own pipeline, preprocessor and precision, and saves those tensors; a
DistillDetector with ``teacher_cache=<file>`` then gathers each batch's rows instead of running the teacher
forward pass, which is about a third of a distillation step on CPU (benchmarks/kd_overhead.py).

Exactness: each sample's row is the teacher's output for that sample alone. A live pass computes the same batch
of samples together; the convolutions give each sample the same result up to the kernels' summation order
(tests/test_teacher_cache.py measures the difference and checks that a step's losses agree). Tensors are stored
in bf16 where that loses nothing (trunk outputs under bf16 autocast are bf16 values), else in fp32.

The file records what it was built for (the student's input pipeline and preprocessor, the teacher checkpoint's
content hash, the taps); a distiller refuses a cache built for another input or lacking a tap.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from pgd.errors import ConfigError, UserError
from pgd.teacher_inputs import CACHE_FILE, input_signature  # noqa: F401  (re-exported)

FORMAT = 2          # 2: the teacher checkpoint named by its sha256 (1: size and mtime)


class TeacherCacheError(UserError, RuntimeError):
    """A teacher cache that does not fit the run (another input pipeline, a missing tap, an image not in it)."""


def teacher_stamp(checkpoint: str | os.PathLike) -> dict[str, int | str]:
    """Identifies the teacher checkpoint the cache was computed from by its content (a retrained teacher
    invalidates the cache; a copied or moved one, with new timestamps, does not). ~0.2 s for an R101 model.pth."""
    digest = hashlib.sha256()
    with open(checkpoint, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            digest.update(block)
    return dict(size=Path(checkpoint).stat().st_size, sha256=digest.hexdigest())


def _compact(t: Tensor) -> Tensor:
    t = t.detach().cpu()
    if t.dtype == torch.float32:
        b = t.to(torch.bfloat16)
        if torch.equal(b.float(), t):
            return b
    return t


def _structure(value: Any) -> Any:
    """A FeatureSet entry as nested lists of per-sample-batched tensors (tuples become lists)."""
    if isinstance(value, Tensor):
        return value
    return [_structure(v) for v in value]


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], Tensor):
        return _compact(torch.cat(parts, 0))
    return [_cat([p[i] for p in parts]) for i in range(len(parts[0]))]


def _gather(stored: Any, rows: Tensor, device: torch.device | str) -> Any:
    if isinstance(stored, Tensor):
        return stored.index_select(0, rows).to(device=device, dtype=torch.float32)
    return [_gather(s, rows, device) for s in stored]


class TeacherCache:
    """The saved teacher outputs; :meth:`lookup` returns one batch's FeatureSet entries."""

    def __init__(self, data: dict[str, Any], path: str | os.PathLike = '<memory>') -> None:
        if data.get('format') != FORMAT:
            raise TeacherCacheError(f'{path}: not a teacher cache of format {FORMAT}; rebuild it with '
                                    '`pgd teacher-cache`')
        self.path = str(path)
        self.meta = data['meta']
        self.entries: dict[str, Any] = data['entries']
        # image ids as strings: COCO's are ints, CrowdHuman's strings such as '000001,train'
        self.index: dict[tuple[str, bool], int] = {(str(i), bool(f)): r for r, (i, f) in enumerate(data['keys'])}
        self.input_shape = tuple(data['input_shape'])

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'TeacherCache':
        if not Path(path).is_file():
            raise TeacherCacheError(f'{path}: teacher cache not found; build it with `pgd teacher-cache` (the '
                                    'workflow rule teacher_cache), or drop the profile\'s teacher_cache')
        return cls(torch.load(path, map_location='cpu', weights_only=True), path)

    def check(self, signature: str, taps: Iterable[str], checkpoint: str | os.PathLike | None) -> None:
        if self.meta['input_signature'] != signature:
            raise TeacherCacheError(f'{self.path} was built for another input pipeline or preprocessor than this '
                                    'student\'s; rebuild it (`pgd teacher-cache`)')
        missing = sorted(set(taps) - set(self.entries))
        if missing:
            raise TeacherCacheError(f'{self.path} lacks the tap(s) {missing} this run\'s KD losses read; rebuild it '
                                    f'with them (`pgd teacher-cache`)')
        if checkpoint is not None and Path(checkpoint).is_file() and \
                self.meta['teacher'] != teacher_stamp(checkpoint):
            raise TeacherCacheError(f'{self.path} was computed from another {checkpoint} (the teacher was '
                                    'retrained since); rebuild it')

    def lookup(self, img_ids: Sequence[int | str], flips: Sequence[bool], batch_input_shape: Sequence[int],
               names: Iterable[str], device: torch.device | str = 'cpu') -> dict[str, Any]:
        if tuple(batch_input_shape) != self.input_shape:
            raise TeacherCacheError(f'{self.path} holds teacher outputs for {self.input_shape} inputs, this batch '
                                    f'is {tuple(batch_input_shape)}: a cache serves one fixed input size only')
        keys = [(str(i), bool(f)) for i, f in zip(img_ids, flips)]
        missing = next((k for k in keys if k not in self.index), None)
        if missing is not None:
            raise TeacherCacheError(f'{self.path} has no entry for image ({missing[0]}, {missing[1]}) (image id, '
                                    'flipped): was it built on another training set?')
        rows = torch.tensor([self.index[k] for k in keys])
        return {name: _gather(self.entries[name], rows, device) for name in names}


def build_cache(model, batches: Iterable[tuple[Tensor, list]], signature: str, checkpoint: str | os.PathLike,
                autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Run ``model``'s teacher (a DistillDetector) over preprocessed ``batches`` of (inputs, data samples) and
    return the cache's content. ``autocast_dtype``: the trunk's training precision (bf16 in the mini profile), as
    pgd.models.feature_autocast applies it."""
    from pgd.models.feature_autocast import FeatureAutocastHook

    hook = None
    if autocast_dtype is not None:
        hook = FeatureAutocastHook({torch.bfloat16: 'bfloat16'}[autocast_dtype])
        hook.wrap(model.teacher)
        hook.active = True
    keys, parts, shape = [], [], None
    try:
        for inputs, samples in batches:
            shape = shape or tuple(inputs.shape[-2:])
            if tuple(inputs.shape[-2:]) != shape:
                raise ConfigError(f'teacher cache: inputs of {tuple(inputs.shape[-2:])} after {shape}: the '
                                  'student\'s training images must share one size for a cache')
            feats = model._forward_teacher(inputs)
            parts.append({name: _structure(value) for name, value in feats.items()})
            keys += [(str(s.metainfo['img_id']), bool(s.metainfo['flip'])) for s in samples]
    finally:
        if hook is not None:
            hook.active = False
            hook.unwrap()
    if len(set(keys)) != len(keys):
        raise ConfigError('teacher cache: an (image, flip) pair occurs twice')
    entries = {name: _cat([p[name] for p in parts]) for name in parts[0]}
    return dict(format=FORMAT, keys=keys, input_shape=list(shape), entries=entries,
                meta=dict(input_signature=signature, teacher=teacher_stamp(checkpoint),
                          taps=sorted(n for n in entries if n not in ('neck', 'head_outs'))))
