"""Per-detector adapters: a head's raw outputs -> :class:`~pgd.losses.base.DensePredictions`.

PGD's quality score needs, for every prediction of every level, its location, the decoded box and the class
probabilities (docs/methods.md §1.2). Each detector has its own prior convention and box parameterisation; the adapters
reuse the head's own prior generator and box coder so that the boxes are exactly those of the head's
``predict_by_feat`` before clipping, score filtering and NMS.

Conventions (mmdet 3.3):
* FCOS: points (j + 0.5) s; distances are in pixels because the teacher runs in eval mode (``norm_on_bbox``
  multiplies by the stride only when not training) - a training-mode FCOS head is rejected.
* AutoAssign: points j s (offset 0); the head always multiplies distances by the stride.
* ATSS (incl. the IoU-branch head) and DDOD: anchor centres (j s, i s), DeltaXYWHBBoxCoder decode, no clipping.
* GFL: anchor centres; distance = integral of the softmax over the reg_max + 1 bins x the anchor's own level stride
  (or, with ``gfl_decode_stride_bug``, image n uses the stride of level n, as the official code does: bug B2).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mmdet.models.dense_heads import (AnchorFreeHead, AnchorHead, ATSSHead, AutoAssignHead, DDODHead, FCOSHead,
                                      GFLHead)

from pgd.errors import ConfigError
from pgd.losses.base import DensePredictions


def _flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Per-level (N, K, H, W) -> (N, sum_l H_l W_l, K), row-major inside each level."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def _unflatten_levels(x: Tensor, level_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """(N, A) -> per-level (N, 1, H_l, W_l) (inverse of _flatten_levels for one channel)."""
    counts = [h * w for h, w in level_sizes]
    if x.shape[1] != sum(counts):
        raise ValueError(f'mask has {x.shape[1]} predictions, the head outputs have {sum(counts)}')
    return [c.reshape(x.shape[0], 1, h, w) for c, (h, w) in zip(x.split(counts, dim=1), level_sizes)]


class DetectorAdapter:
    """Base adapter; subclasses implement :meth:`_priors` and :meth:`_decode`."""

    name: str = ''
    anchor_based: bool = False

    def __init__(self, head: nn.Module, gfl_decode_stride_bug: bool = False) -> None:
        self.head = head
        if head.prior_generator.num_base_priors[0] != 1:
            raise ConfigError(f'{type(head).__name__} has {head.prior_generator.num_base_priors[0]} priors per '
                              'location; PGD adapters expect exactly one')
        self.gfl_decode_stride_bug = gfl_decode_stride_bug

    # ------------------------------------------------------------------ helpers
    def level_sizes(self, head_outs: tuple) -> list[tuple[int, int]]:
        return [tuple(int(s) for s in m.shape[-2:]) for m in head_outs[0]]

    @property
    def strides(self) -> list[int]:
        return [int(s[0]) if isinstance(s, (tuple, list)) else int(s) for s in self.head.prior_generator.strides]

    def _check(self, head_outs: tuple, batch_img_metas: list[dict]) -> None:
        cls_scores = head_outs[0]
        if len(cls_scores) != len(self.strides):
            raise ValueError(f'{self.name} adapter: {len(cls_scores)} levels of outputs for '
                             f'{len(self.strides)} strides')
        if cls_scores[0].shape[0] != len(batch_img_metas):
            raise ValueError(f'{self.name} adapter: batch of {cls_scores[0].shape[0]} outputs but '
                             f'{len(batch_img_metas)} image metas')

    def _priors(self, level_sizes, device, dtype) -> list[Tensor]:
        return self.head.prior_generator.grid_priors(level_sizes, dtype=dtype, device=device)

    def _valid(self, level_sizes, batch_img_metas, device) -> Tensor:
        n = len(batch_img_metas)
        a = sum(h * w for h, w in level_sizes)
        return torch.ones(n, a, dtype=torch.bool, device=device)

    def _decode(self, points: Tensor, priors: Tensor, bbox_pred: Tensor, level: Tensor) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ contract
    def dense_predictions(self, head_outs: tuple, batch_img_metas: list[dict]) -> DensePredictions:
        self._check(head_outs, batch_img_metas)
        cls_scores, bbox_preds = head_outs[0], head_outs[1]
        sizes = self.level_sizes(head_outs)
        device = cls_scores[0].device
        priors = torch.cat(self._priors(sizes, device, torch.float32))
        points = self._points(priors)
        level = torch.cat([torch.full((h * w,), i, dtype=torch.long, device=device)
                           for i, (h, w) in enumerate(sizes)])
        cls_prob = _flatten_levels(cls_scores).float().sigmoid()
        bbox_pred = _flatten_levels(bbox_preds).float()
        boxes = self._decode(points, priors, bbox_pred, level)
        valid = self._valid(sizes, batch_img_metas, device)
        return DensePredictions(points=points, level=level, level_sizes=sizes, strides=self.strides,
                                boxes=boxes, cls_prob=cls_prob, valid=valid)

    def _points(self, priors: Tensor) -> Tensor:
        return priors[:, :2]

    def mask_predictions(self, head_outs: tuple, keep: Tensor) -> tuple:
        """Suppress the predictions where ``keep`` is False (N, A) by driving their class logits to the dtype's
        minimum, so that every score (sigmoid, x centerness/objectness/IoU) is 0 and fails any score threshold."""
        cls_scores = head_outs[0]
        sizes = self.level_sizes(head_outs)
        if keep.dtype != torch.bool or keep.dim() != 2 or keep.shape[0] != cls_scores[0].shape[0]:
            raise ValueError(f'keep must be a bool (N, A) tensor, got {keep.dtype} {tuple(keep.shape)}')
        drop = _unflatten_levels(~keep, sizes)
        masked = [c.masked_fill(d, torch.finfo(c.dtype).min) for c, d in zip(cls_scores, drop)]
        return (masked, *head_outs[1:])


class _PointAdapter(DetectorAdapter):
    """FCOS / AutoAssign: points + (l, t, r, b) distances in pixels."""

    def _decode(self, points, priors, bbox_pred, level):
        return self.head.bbox_coder.decode(points.expand(bbox_pred.shape[0], -1, -1), bbox_pred)


class FCOSAdapter(_PointAdapter):
    name = 'fcos'

    def dense_predictions(self, head_outs, batch_img_metas):
        if self.head.norm_on_bbox and self.head.training:
            raise ConfigError('FCOS adapter: the head is in training mode, so its norm_on_bbox distances are in '
                              'stride units; run the teacher in eval mode')
        return super().dense_predictions(head_outs, batch_img_metas)


class AutoAssignAdapter(_PointAdapter):
    name = 'autoassign'


class _AnchorAdapter(DetectorAdapter):
    """Anchor-based heads: locations are anchor centres; only anchors inside each image's pad_shape are valid."""

    anchor_based = True

    def _points(self, priors):
        return (priors[:, :2] + priors[:, 2:]) / 2

    def _valid(self, level_sizes, batch_img_metas, device):
        flags = []
        for meta in batch_img_metas:   # per image: the valid region differs with each image's own shape
            shape = meta.get('pad_shape', meta.get('img_shape'))
            if shape is None:
                raise ValueError('anchor adapter: image meta has neither pad_shape nor img_shape')
            flags.append(torch.cat(self.head.prior_generator.valid_flags(level_sizes, shape, device)))
        return torch.stack(flags)


class DeltaAnchorAdapter(_AnchorAdapter):
    """ATSS (centerness or IoU branch) and DDOD: DeltaXYWHBBoxCoder on the anchors."""

    def __init__(self, head, gfl_decode_stride_bug=False, name='atss'):
        super().__init__(head, gfl_decode_stride_bug)
        self.name = name

    def _decode(self, points, priors, bbox_pred, level):
        n = bbox_pred.shape[0]
        boxes = self.head.bbox_coder.decode(priors.repeat(n, 1), bbox_pred.reshape(-1, 4))
        return boxes.reshape(n, -1, 4)


class GFLAdapter(_AnchorAdapter):
    name = 'gfl'

    def _decode(self, points, priors, bbox_pred, level):
        n, a, _ = bbox_pred.shape
        dist = self.head.integral(bbox_pred.reshape(n * a, -1)).reshape(n, a, 4)
        strides = torch.as_tensor(self.strides, dtype=dist.dtype, device=dist.device)
        if self.gfl_decode_stride_bug:
            # official code (B2): image n decodes all levels with the stride of level n; zip() drops images beyond
            # the level count, which here is a stride of 0 (degenerate boxes) - their validity is cleared below
            per_image = torch.zeros(n, dtype=dist.dtype, device=dist.device)
            m = min(n, len(self.strides))
            per_image[:m] = strides[:m]
            scale = per_image[:, None, None]
        else:
            scale = strides[level][None, :, None]
        return self.head.bbox_coder.decode(points.expand(n, -1, -1), dist * scale)

    def _valid(self, level_sizes, batch_img_metas, device):
        valid = super()._valid(level_sizes, batch_img_metas, device)
        if self.gfl_decode_stride_bug:
            valid[len(self.strides):] = False
        return valid


def detector_name(head: nn.Module) -> str:
    """The detector family of a bbox head (checked most-derived first)."""
    if isinstance(head, GFLHead):
        return 'gfl'
    if isinstance(head, DDODHead):
        return 'ddod'
    if isinstance(head, AutoAssignHead):
        return 'autoassign'
    if isinstance(head, FCOSHead):
        return 'fcos'
    if isinstance(head, ATSSHead) or type(head).__name__ == 'ATSSIoUHead':
        return 'atss'
    raise ConfigError(f'no PGD adapter for bbox head {type(head).__name__}; supported: FCOS, AutoAssign, ATSS '
                      '(incl. ATSSIoUHead), GFL, DDOD')


def build_adapter(detector: nn.Module, gfl_decode_stride_bug: bool = False) -> DetectorAdapter:
    """Adapter for ``detector`` (a single-stage mmdet detector or its bbox head), chosen by the head type."""
    head = getattr(detector, 'bbox_head', detector)
    name = detector_name(head)
    if name == 'gfl':
        return GFLAdapter(head, gfl_decode_stride_bug)
    if name == 'autoassign':
        return AutoAssignAdapter(head)
    if name == 'fcos':
        return FCOSAdapter(head)
    if not isinstance(head, AnchorHead) or isinstance(head, AnchorFreeHead):
        raise ConfigError(f'{type(head).__name__} is not an anchor head')
    return DeltaAnchorAdapter(head, name=name)
