"""LD: localisation distillation on GFL's box-distribution head (Zheng et al., CVPR 2022), see docs/baselines.md.

Main region: the student's own ATSS positives (``ctx.student_head.get_targets``); per positive, the KL between
temperature-softened teacher and student edge distributions (mean over the reg_max + 1 bins, times T^2), weighted
by the student's detached max class score, summed over edges and divided by the fixed average factor 4.
Options from the official recipe: VLR (valuable localisation region), class-logit KD on positives, and feature
imitation on the fine-grained anchor region.
"""
from __future__ import annotations

import torch
from mmdet.models.losses.kd_loss import knowledge_distillation_kl_div_loss
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from torch import Tensor

from .base import BaseKDLoss, ConfigError, KDContext
from .baseline_masks import box_iou, fgfi_imitation_mask, paired_levels


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temp: float) -> Tensor:
    """KL(softmax(t / T) || softmax(s / T)) as a mean over the last dim, times T^2: (..., K) -> (...)."""
    k = student_logits.shape[-1]
    out = knowledge_distillation_kl_div_loss(student_logits.reshape(-1, k), teacher_logits.reshape(-1, k),
                                             T=temp, reduction='none')
    return out.reshape(student_logits.shape[:-1])


def flatten_levels(maps: list[Tensor], last: int | None = None) -> Tensor:
    """Per-level (N, C, H, W) -> (N, sum HW, C) or, with ``last``, (N, sum HW, C / last, last)."""
    flat = torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], dim=1)
    return flat if last is None else flat.reshape(flat.shape[0], flat.shape[1], -1, last)


def diou(gt: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Distance-IoU and IoU of (N, M, 4) GTs against (A, 4) boxes, each (N, M, A); DIoU = IoU - rho^2 / c^2."""
    iou = box_iou(gt, boxes.unsqueeze(0).expand(gt.shape[0], -1, -1))
    g, b = gt[..., :, None, :], boxes[None, None]
    rho2 = (((g[..., 0] + g[..., 2]) - (b[..., 0] + b[..., 2])) ** 2
            + ((g[..., 1] + g[..., 3]) - (b[..., 1] + b[..., 3])) ** 2) / 4
    cw = torch.maximum(g[..., 2], b[..., 2]) - torch.minimum(g[..., 0], b[..., 0])
    ch = torch.maximum(g[..., 3], b[..., 3]) - torch.minimum(g[..., 1], b[..., 1])
    return iou - rho2 / (cw ** 2 + ch ** 2).clamp_min(1e-6), iou


def atss_iou_threshold(gt: Tensor, anchors: Tensor, iou: Tensor, level_counts: list[int],
                       topk: int = 9) -> Tensor:
    """ATSS's per-GT statistic: mean + std of the IoUs of the ``topk`` anchors closest (centre distance) to the
    GT centre on each level; (N, M)."""
    gc = (gt[..., :2] + gt[..., 2:]) / 2                                                      # (N, M, 2)
    ac = (anchors[:, :2] + anchors[:, 2:]) / 2                                                # (A, 2)
    dist = (gc[..., :, None, :] - ac[None, None]).pow(2).sum(-1)                             # (N, M, A)
    cand = []
    for d, i in zip(torch.split(dist, level_counts, dim=2), torch.split(iou, level_counts, dim=2)):
        idx = d.topk(min(topk, d.shape[-1]), dim=-1, largest=False).indices
        cand.append(i.gather(-1, idx))
    cand = torch.cat(cand, dim=-1)
    return cand.mean(-1) + cand.std(-1)


@MODELS.register_module()
class LDLoss(BaseKDLoss):
    """LD for GFL students and teachers with the same ``reg_max``.

    Args:
        loss_weight, temp, avg_factor: the main region (mmdet's LDHead: 0.25, T = 10, 4.0).
        vlr_weight, vlr_temp, vlr_avg_factor, vlr_low, vlr_topk: VLR (0 = off); region: DIoU in
            [vlr_low * thr, thr) of some GT, thr = ATSS mean + std, positives excluded; weight = that IoU.
        cls_kd_weight, cls_kd_temp: KL of the class logits on the positives, averaged per level (0 = off).
        imitation_weight, imitation_psi: mean squared FPN-feature error on the anchors with IoU > psi x the
            image-wide best IoU of a GT (0 = off; no adapter).
    """

    supported_detectors = ('gfl',)

    def __init__(self, loss_weight: float = 0.25, temp: float = 10.0, avg_factor: float = 4.0,
                 vlr_weight: float = 0.0, vlr_temp: float = 10.0, vlr_avg_factor: float = 16.0,
                 vlr_low: float = 0.25, vlr_topk: int = 9, cls_kd_weight: float = 0.0, cls_kd_temp: float = 2.0,
                 imitation_weight: float = 0.0, imitation_psi: float = 0.5):
        super().__init__()
        for k, v in dict(temp=temp, vlr_temp=vlr_temp, cls_kd_temp=cls_kd_temp, avg_factor=avg_factor,
                         vlr_avg_factor=vlr_avg_factor).items():
            if v <= 0:
                raise ValueError(f'LDLoss: {k} must be > 0, got {v}')
        self.loss_weight, self.temp, self.avg_factor = float(loss_weight), float(temp), float(avg_factor)
        self.vlr_weight, self.vlr_temp, self.vlr_avg_factor = float(vlr_weight), float(vlr_temp), float(vlr_avg_factor)
        self.vlr_low, self.vlr_topk = float(vlr_low), int(vlr_topk)
        self.cls_kd_weight, self.cls_kd_temp = float(cls_kd_weight), float(cls_kd_temp)
        self.imitation_weight, self.imitation_psi = float(imitation_weight), float(imitation_psi)

    @classmethod
    def check_detector(cls, detector: str) -> None:
        if detector != 'gfl':
            raise ConfigError(
                f"LDLoss cannot distil {detector!r}: LD distils the general-distribution (DFL) box head, "
                f"reg_max + 1 bins per edge, which among the five detectors only GFL has (ATSS, DDOD, FCOS and "
                f"AutoAssign regress deltas or distances); use LD with detector='gfl' only")

    # ------------------------------------------------------------------------------------------- assignment
    @torch.no_grad()
    def assign(self, ctx: KDContext, featmap_sizes: list) -> tuple[Tensor, Tensor, list[int]]:
        """The student head's own ATSS targets: (pos (N, A) bool, anchors (A, 4), per-level counts)."""
        head = self.student_head(ctx)
        if not ctx.batch_data_samples:
            raise ValueError('LDLoss needs ctx.batch_data_samples for the student ATSS assignment')
        gts, gts_ignore, metas = unpack_gt_instances(ctx.batch_data_samples)
        device = ctx.gt_boxes.device
        anchor_list, valid_list = head.get_anchors(featmap_sizes, metas, device=device)
        level_counts = [a.shape[0] for a in anchor_list[0]]
        anchors0 = torch.cat(anchor_list[0])
        targets = head.get_targets(anchor_list, valid_list, gts, metas, gts_ignore)
        labels = torch.cat(targets[1], dim=1)                                                  # (N, A)
        pos = (labels >= 0) & (labels < head.num_classes)
        return pos, anchors0, level_counts

    @staticmethod
    def student_head(ctx: KDContext):
        head = ctx.student_head
        if head is None or not hasattr(head, 'get_targets') or not hasattr(head, 'reg_max'):
            raise ConfigError(f'LDLoss needs ctx.student_head to be a GFL head (get_targets, reg_max), '
                              f'got {type(head).__name__}')
        return head

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, ctx: KDContext) -> dict[str, Tensor]:
        name = type(self).__name__
        s_cls, s_reg = ctx.student.head_outs[0], ctx.student.head_outs[1]
        t_cls, t_reg = ctx.teacher.head_outs[0], ctx.teacher.head_outs[1]
        paired_levels(s_reg, t_reg, name + ' (box distributions)', len(s_reg))
        bins = self.student_head(ctx).reg_max + 1
        if s_reg[0].shape[1] != 4 * bins:
            raise ConfigError(f'{name}: student box branch has {s_reg[0].shape[1]} channels, expected '
                              f'4 x (reg_max + 1) = {4 * bins}; teacher and student need the same reg_max')
        pos, anchors, level_counts = self.assign(ctx, [m.shape[-2:] for m in s_cls])
        s_dist = flatten_levels([m.float() for m in s_reg], bins)                             # (N, A, 4, R+1)
        t_dist = flatten_levels([m.float() for m in t_reg], bins)
        s_logits = flatten_levels([m.float() for m in s_cls])                                 # (N, A, C)
        w = s_logits.detach().sigmoid().amax(dim=-1)                                          # (N, A)
        kl_edges = kd_kl(s_dist, t_dist, self.temp).sum(-1)                                   # (N, A)
        losses = {'loss_ld': self.loss_weight * (kl_edges * w * pos).sum() / self.avg_factor}
        if self.vlr_weight > 0:
            losses['loss_ld_vlr'] = self.vlr_loss(ctx, s_dist, t_dist, pos, anchors, level_counts)
        if self.cls_kd_weight > 0:
            t_logits = flatten_levels([m.float() for m in t_cls])
            losses['loss_ld_kd'] = self.cls_kd_loss(s_logits, t_logits, pos, level_counts)
        if self.imitation_weight > 0:
            losses['loss_ld_im'] = self.imitation_loss(ctx, anchors, level_counts)
        return self.check_keys(losses, name)

    def cls_kd_loss(self, s_logits: Tensor, t_logits: Tensor, pos: Tensor, level_counts: list[int]) -> Tensor:
        """KL_T of the (N, A, C) class logits on the positives, averaged per level over its positives, summed."""
        kl = kd_kl(s_logits, t_logits, self.cls_kd_temp) * pos                                  # (N, A)
        per_level = [k.sum() / p.sum().clamp_min(1) for k, p in
                     zip(torch.split(kl, level_counts, 1), torch.split(pos, level_counts, 1))]
        return self.cls_kd_weight * sum(per_level)

    def vlr_loss(self, ctx: KDContext, s_dist: Tensor, t_dist: Tensor, pos: Tensor, anchors: Tensor,
                 level_counts: list[int]) -> Tensor:
        gt, valid = ctx.gt_boxes.float(), ctx.gt_valid
        with torch.no_grad():
            d, iou = diou(gt, anchors.float())                                                 # (N, M, A)
            thr = atss_iou_threshold(gt, anchors.float(), iou, level_counts, self.vlr_topk)[..., None]
            region = (d >= self.vlr_low * thr) & (d < thr) & valid[..., None]
            weight = torch.where(region, iou, torch.zeros_like(iou)).amax(dim=1) * (~pos)      # (N, A)
        kl_edges = kd_kl(s_dist, t_dist, self.vlr_temp).sum(-1)
        return self.vlr_weight * (kl_edges * weight).sum() / self.vlr_avg_factor

    def imitation_loss(self, ctx: KDContext, anchors: Tensor, level_counts: list[int]) -> Tensor:
        pairs = paired_levels(ctx.student.neck, ctx.teacher.neck, type(self).__name__, len(level_counts))
        with torch.no_grad():
            mask = fgfi_imitation_mask(anchors.float()[:, None], ctx.gt_boxes, ctx.gt_valid, self.imitation_psi)
        loss = 0.0
        for (fs, ft), m in zip(pairs, torch.split(mask, level_counts, dim=1)):
            m = m.reshape(fs.shape[0], 1, *fs.shape[-2:])
            loss = loss + ((fs - ft).pow(2) * m).sum() / (m.sum() * fs.shape[1]).clamp_min(1.0)
        return self.imitation_weight * loss
