"""DDOD's label assignment as the official PGD code trains it: a global top-k by prediction quality.

The official DDOD teachers, students and PGD students (ChenhongyiYang/PGD, work_configs/detectors/ddod_*.py,
`DDODTopkAssigner(topk=9, alpha=..., is_atss=False)`, mmdet/core/bbox/assigners/cost_topk_assigner.py) assign with
a DeFCN-style cost instead of mmdet's ATSS (9 per level by centre distance, then a mean + std IoU threshold):

    cost(a, o) = sigmoid(z_{a, c_o}) ** (1 - alpha) * IoU(decoded box_a, b_o) ** alpha

For each object the `topk` anchors of highest cost over all levels are candidates; a candidate is positive when its
cost is > 0 and its anchor centre lies inside the box by more than `inside_margin` px; an anchor claimed by several
objects goes to the one of highest cost. DDOD's head passes the cls assigner alpha 0.8 and the reg assigner 0.6.
"""
from __future__ import annotations

import torch
from mmdet.models.task_modules.assigners import AssignResult, BaseAssigner
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData

_NEG_INF = -1e8


@TASK_UTILS.register_module()
class DDODTopkAssigner(BaseAssigner):
    """Global top-k assignment by sigmoid(cls) ** (1 - alpha) * IoU ** alpha (see the module docstring).

    Args:
        topk: candidates per object, over all levels (official: 9).
        alpha: the IoU exponent of the cost (official: 0.8 for the cls assigner, 0.6 for the reg assigner).
        iou_calculator: IoU between the decoded predictions and the objects.
        ignore_iof_thr: anchors whose IoF with an ignore box exceeds it are ignored (-1: off, the official value).
        inside_margin: how far (px) inside the box an anchor centre must lie (official: 0.01).
    """

    def __init__(self, topk: int = 9, alpha: float = 0.8, iou_calculator: dict = dict(type='BboxOverlaps2D'),
                 ignore_iof_thr: float = -1, inside_margin: float = 0.01) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f'DDODTopkAssigner.topk must be a positive int, got {topk!r}')
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'DDODTopkAssigner.alpha must lie in [0, 1], got {alpha!r}')
        self.topk = topk
        self.alpha = alpha
        self.iou_calculator = TASK_UTILS.build(iou_calculator)
        self.ignore_iof_thr = ignore_iof_thr
        self.inside_margin = inside_margin

    def assign(self, pred_instances: InstanceData, num_level_priors: list[int], gt_instances: InstanceData,
               gt_instances_ignore: InstanceData | None = None) -> AssignResult:
        priors = pred_instances.priors[:, :4]
        gt_bboxes, gt_labels = gt_instances.bboxes, gt_instances.labels
        num_gt, num_priors = gt_bboxes.size(0), priors.size(0)
        gt_inds = priors.new_zeros((num_priors,), dtype=torch.long)
        if num_gt == 0 or num_priors == 0:
            return AssignResult(num_gt, gt_inds, priors.new_zeros((num_priors,)),
                                labels=priors.new_full((num_priors,), -1, dtype=torch.long))

        iou = self.iou_calculator(pred_instances.bboxes.detach(), gt_bboxes)                  # (A, M)
        cost = pred_instances.scores.detach()[:, gt_labels].sigmoid() ** (1 - self.alpha) * iou ** self.alpha

        if (self.ignore_iof_thr > 0 and gt_instances_ignore is not None
                and gt_instances_ignore.bboxes.numel() > 0):
            iof = self.iou_calculator(priors, gt_instances_ignore.bboxes, mode='iof')
            gt_inds[iof.max(dim=1).values > self.ignore_iof_thr] = -1

        cand_cost, cand = cost.topk(min(self.topk, num_priors), dim=0)                            # (k, M)
        cx = (priors[:, 0] + priors[:, 2]) / 2
        cy = (priors[:, 1] + priors[:, 3]) / 2
        dist = torch.stack([cx[cand] - gt_bboxes[:, 0], cy[cand] - gt_bboxes[:, 1],
                            gt_bboxes[:, 2] - cx[cand], gt_bboxes[:, 3] - cy[cand]], dim=0)
        is_pos = (cand_cost > 0) & (dist.min(dim=0).values > self.inside_margin)                # (k, M)

        gt_idx = torch.arange(num_gt, device=priors.device).expand_as(cand)
        claimed = cost.new_full((num_priors, num_gt), _NEG_INF)
        claimed[cand[is_pos], gt_idx[is_pos]] = cand_cost[is_pos]
        max_cost, best_gt = claimed.max(dim=1)
        pos = max_cost > _NEG_INF
        gt_inds[pos] = best_gt[pos] + 1
        labels = gt_inds.new_full((num_priors,), -1)
        labels[pos] = gt_labels[best_gt[pos]]
        return AssignResult(num_gt, gt_inds, max_cost, labels=labels)
