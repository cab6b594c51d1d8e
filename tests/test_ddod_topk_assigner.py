"""DDODTopkAssigner (pgd/models/assigners): the official global top-k by sigmoid(cls)^(1-alpha) IoU^alpha."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

from pgd.models.assigners import DDODTopkAssigner


def _logit(p):
    return math.log(p / (1 - p))


def _case():
    # five 10 x 10 anchors along x; object 0 covers anchors 0-2, object 1 anchors 2-4 (centres 5, 15, ..., 45)
    priors = torch.tensor([[i * 10.0, 0.0, i * 10.0 + 10, 10.0] for i in range(5)])
    boxes = priors.clone()                               # predictions = anchors
    gt = InstanceData(bboxes=torch.tensor([[0.0, 0.0, 30.0, 10.0], [20.0, 0.0, 50.0, 10.0]]),
                      labels=torch.tensor([0, 1]))
    p = torch.tensor([[0.9, 0.1], [0.5, 0.1], [0.6, 0.6], [0.1, 0.2], [0.1, 0.8]])
    scores = p.log() - (1 - p).log()
    return InstanceData(priors=priors, bboxes=boxes, scores=scores), gt


def test_hand_computed_assignment():
    pred, gt = _case()
    # IoU of each 10 x 10 prediction with a 30 x 10 box it lies in: 1/3; outside: 0
    # cost(a, o) = p^(1-alpha) (1/3)^alpha; alpha 0.8, top-2 per object over all anchors:
    #   object 0: anchors 0 (p .9), 2 (p .6) -> both positive, inside the box
    #   object 1: anchors 4 (p .8), 2 (p .6) -> anchor 2 is claimed by both: cost .6^.2 (1/3)^.8 each -> tie, first (0)
    res = DDODTopkAssigner(topk=2, alpha=0.8).assign(pred, [5], gt)
    assert res.gt_inds.tolist() == [1, 0, 1, 0, 2]
    assert res.labels.tolist() == [0, -1, 0, -1, 1]
    third = (1 / 3) ** 0.8
    assert float(res.max_overlaps[0]) == pytest.approx(0.9 ** 0.2 * third, rel=1e-6)
    assert float(res.max_overlaps[4]) == pytest.approx(0.8 ** 0.2 * third, rel=1e-6)


def test_higher_cost_wins_a_shared_anchor_and_outside_centres_are_negative():
    pred, gt = _case()
    pred.scores[2] = torch.tensor([_logit(0.3), _logit(0.7)])     # anchor 2 now prefers object 1
    pred.bboxes[1] = torch.tensor([200.0, 0.0, 210.0, 10.0])      # anchor 1's prediction misses: IoU 0 -> cost 0
    res = DDODTopkAssigner(topk=3, alpha=0.6).assign(pred, [5], gt)
    # object 0 top-3: anchors 0, 2, then a zero-cost one (not positive); object 1: anchors 4, 2, 3
    assert res.gt_inds.tolist() == [1, 0, 2, 2, 2]


def test_no_objects():
    pred, _ = _case()
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    res = DDODTopkAssigner().assign(pred, [5], empty)
    assert res.gt_inds.tolist() == [0] * 5 and res.labels.tolist() == [-1] * 5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='topk must be a positive int, got 0'):
        DDODTopkAssigner(topk=0)
    with pytest.raises(ValueError, match=r'alpha must lie in \[0, 1\], got 1.5'):
        DDODTopkAssigner(alpha=1.5)


def test_a_ddod_head_trains_with_it():
    """The assigner plugs into mmdet's DDODHead (cls and reg assigners) and gives finite losses with positives."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import pgd.models  # noqa: F401
    from tiny_detectors import tiny_batch, tiny_detector_cfg

    register_all_modules()
    cfg = tiny_detector_cfg('ddod')
    cfg.train_cfg.assigner = dict(type='DDODTopkAssigner', topk=9, alpha=0.8)
    cfg.train_cfg.reg_assigner = dict(type='DDODTopkAssigner', topk=9, alpha=0.6)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    assert type(model.bbox_head.cls_assigner).__name__ == 'DDODTopkAssigner'
    assert model.bbox_head.reg_assigner.alpha == 0.6
    inputs, samples = tiny_batch(model)
    losses = model.loss(inputs, samples)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and float(losses['loss_bbox'][0]) > 0   # positives were assigned
