"""What every KD loss receives (:class:`KDContext`) and the interface it implements (:class:`BaseKDLoss`).

The dataclasses are plain containers (no mmdet import) so that the pure-torch core and the tests can build them by
hand. The distiller (:mod:`pgd.models.distiller`) fills them once per training step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from pgd.errors import ConfigError  # noqa: F401  (re-exported: the losses raise it)




class FeatureSet(dict):
    """What one detector (teacher or student) computed in a distillation pass, by name.

    Always ``neck`` (FPN outputs, per level (N, C, H_l, W_l)) and ``head_outs`` (the raw ``bbox_head(x)`` outputs:
    a tuple of per-level lists); plus every tap the KD losses declared (:mod:`pgd.models.taps`), e.g. ``cls_feat``
    = the outputs of ``bbox_head.cls_convs.0`` per level. Entries read as attributes too (``feats.neck``).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f'no {name!r} was recorded in this pass (recorded: {sorted(self)}); a KD loss that '
                                 f'reads it must declare it as a tap (BaseKDLoss.required_taps)') from None

    @property
    def num_levels(self) -> int:
        return len(self['neck'])


@dataclass
class DensePredictions:
    """Teacher predictions of all levels concatenated; A = sum_l H_l * W_l, row-major inside each level."""

    points: Tensor                        # (A, 2) (x, y) in input pixels, the detector's own prior convention
    level: Tensor                         # (A,) long, FPN level index
    level_sizes: list[tuple[int, int]]    # (H_l, W_l)
    strides: list[int]
    boxes: Tensor                         # (N, A, 4) decoded teacher boxes x1y1x2y2
    cls_prob: Tensor                      # (N, A, num_classes) sigmoid class probabilities
    valid: Tensor                         # (N, A) bool (anchor-based: inside the unpadded image)

    def __post_init__(self) -> None:
        a = int(sum(h * w for h, w in self.level_sizes))
        if self.points.shape != (a, 2):
            raise ValueError(f'DensePredictions.points must be ({a}, 2) for level_sizes {self.level_sizes}, '
                             f'got {tuple(self.points.shape)}')
        if self.level.shape != (a,):
            raise ValueError(f'DensePredictions.level must be ({a},), got {tuple(self.level.shape)}')
        if len(self.strides) != len(self.level_sizes):
            raise ValueError(f'DensePredictions: {len(self.strides)} strides for {len(self.level_sizes)} levels')
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, a, 4):
            raise ValueError(f'DensePredictions.boxes must be (N, {a}, 4), got {tuple(self.boxes.shape)}')
        if self.cls_prob.dim() != 3 or self.cls_prob.shape[:2] != (n, a):
            raise ValueError(f'DensePredictions.cls_prob must be ({n}, {a}, C), got {tuple(self.cls_prob.shape)}')
        if self.valid.shape != (n, a) or self.valid.dtype != torch.bool:
            raise ValueError(f'DensePredictions.valid must be a bool ({n}, {a}) tensor, '
                             f'got {self.valid.dtype} {tuple(self.valid.shape)}')

    @property
    def num_points(self) -> int:
        return self.points.shape[0]


@dataclass
class KDContext:
    """Everything a KD loss may look at for one training step."""

    student: FeatureSet
    teacher: FeatureSet
    teacher_pred: DensePredictions | None
    gt_boxes: Tensor          # (N, M, 4) padded with zeros
    gt_labels: Tensor         # (N, M) long, padded with -1
    gt_valid: Tensor          # (N, M) bool
    batch_input_shape: tuple[int, int]
    img_shapes: list[tuple[int, int]]
    iteration: int = 0
    student_head: nn.Module | None = None   # for losses that need the student's own assignment (LD)
    batch_data_samples: list = field(default_factory=list)   # mmdet DetDataSample

    @property
    def num_images(self) -> int:
        return self.gt_boxes.shape[0]


def pad_gt(boxes: Sequence[Tensor], labels: Sequence[Tensor],
           device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image GT boxes (M_i, 4) and labels (M_i,) into padded batch tensors.

    Returns ``gt_boxes`` (N, M, 4) float zero-padded, ``gt_labels`` (N, M) long padded with -1 and ``gt_valid``
    (N, M) bool, with M = max(1, max_i M_i) so that downstream code never meets a zero-size object axis.
    """
    if len(boxes) != len(labels):
        raise ValueError(f'pad_gt: {len(boxes)} box tensors but {len(labels)} label tensors')
    if len(boxes) == 0:
        raise ValueError('pad_gt: empty batch')
    for i, (b, l) in enumerate(zip(boxes, labels)):
        if b.dim() != 2 or b.shape[-1] != 4:
            raise ValueError(f'pad_gt: image {i} boxes must be (M, 4), got {tuple(b.shape)}')
        if l.shape != (b.shape[0],):
            raise ValueError(f'pad_gt: image {i} has {b.shape[0]} boxes but labels of shape {tuple(l.shape)}')
    if device is None:
        device = boxes[0].device
    n = len(boxes)
    m = max(1, max(int(b.shape[0]) for b in boxes))
    gt_boxes = torch.zeros(n, m, 4, device=device, dtype=torch.float32)
    gt_labels = torch.full((n, m), -1, device=device, dtype=torch.long)
    gt_valid = torch.zeros(n, m, device=device, dtype=torch.bool)
    for i, (b, l) in enumerate(zip(boxes, labels)):   # per image (not per object): batch assembly only
        k = b.shape[0]
        gt_boxes[i, :k] = b.to(device=device, dtype=torch.float32)
        gt_labels[i, :k] = l.to(device=device, dtype=torch.long)
        gt_valid[i, :k] = True
    return gt_boxes, gt_labels, gt_valid


def gt_from_data_samples(batch_data_samples: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
    """Padded (boxes, labels, valid) from mmdet DetDataSamples' ``gt_instances`` (ignored instances excluded)."""
    boxes, labels = [], []
    for s in batch_data_samples:
        b = s.gt_instances.bboxes
        b = b.tensor if hasattr(b, 'tensor') else b   # HorizontalBoxes or a plain tensor
        boxes.append(b)
        labels.append(s.gt_instances.labels)
    return pad_gt(boxes, labels)


class BaseKDLoss(nn.Module):
    """A KD loss: ``forward(ctx) -> {'loss_*': weighted scalar}``.

    Learnable parts (adapters, GcBlocks, ...) are submodules; they are optimised with the student and dropped from
    ``model.pth``. Subclasses that only work for some detectors override :meth:`check_detector`.
    """

    #: detectors this loss supports; None = all
    supported_detectors: tuple[str, ...] | None = None
    #: the taps (pgd.models.taps) this loss reads, {name: module path}; a config's ``taps=`` overrides them by name
    taps: dict[str, Any] = {}

    def required_taps(self) -> dict[str, Any]:
        """The tensors beyond ``neck`` / ``head_outs`` that :meth:`forward` reads, by name (pgd.models.taps)."""
        return dict(self.taps)

    def adapter_options(self) -> dict[str, Any]:
        """Options this loss needs from the teacher's prediction adapter (pgd.models.adapters.build_adapter), e.g.
        the official code's GFL decoding quirk. None by default."""
        return {}

    def forward(self, ctx: KDContext) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def check_detector(cls, detector: str) -> None:
        """Raise :class:`ConfigError` with a reason if this loss cannot distil ``detector``."""
        if cls.supported_detectors is not None and detector not in cls.supported_detectors:
            raise ConfigError(f'{cls.__name__} supports only {list(cls.supported_detectors)}, not {detector!r}')

    def bind_detector(self, detector: str) -> None:
        """Called by the distiller once, after :meth:`check_detector`, with the detector family (e.g. 'atss'), for
        losses whose defaults depend on it. No-op by default."""

    @staticmethod
    def check_keys(losses: dict[str, Tensor], owner: str) -> dict[str, Tensor]:
        """Fail early if a loss forgot the 'loss_' prefix (mmengine would silently not back-propagate it)."""
        bad = [k for k in losses if not k.startswith('loss_')]
        if bad:
            raise ValueError(f'{owner} returned keys without the "loss_" prefix: {bad}')
        return losses
