"""ATSS with an IoU branch in place of centerness: the ATSS variant PGD uses for teachers and students.

Read off the official PGD code (mmdet/models/dense_heads/atss_iou_head.py, mmdet 2.x), written for mmdet 3.3:

* a 1-channel-per-anchor IoU logit is predicted from the regression tower (where ATSS predicts centerness);
* its target on positive anchors is IoU(decoded predicted box, GT box), with the prediction detached;
  the loss is sigmoid cross-entropy averaged over the number of positives (negatives carry weight 0);
* the GIoU box loss is *not* weighted by a quality target (ATSS weights it by centerness) and is averaged over
  the number of positives;
* at test time the ranking score is sigmoid(cls) x sigmoid(iou), applied after the score threshold and the
  nms_pre top-k (both on the class score alone) exactly as mmdet applies ATSS's centerness
  (`score_factors` of BaseDenseHead.predict_by_feat; multiclass_nms's score_factors in mmdet 2.x).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import Scale
from mmdet.models.dense_heads import ATSSHead
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmdet.utils import ConfigType, InstanceList, OptInstanceList, reduce_mean
from torch import Tensor


@MODELS.register_module()
class ATSSIoUHead(ATSSHead):
    """ATSSHead whose third output is an IoU logit (see the module docstring).

    Args:
        loss_iou: loss on the IoU logit, sigmoid cross-entropy by default.
        Everything else as :class:`mmdet.models.dense_heads.ATSSHead` (``loss_centerness`` is not accepted).
    """

    def __init__(self, *args,
                 loss_iou: ConfigType = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 **kwargs) -> None:
        if 'loss_centerness' in kwargs:
            raise TypeError('ATSSIoUHead has no centerness branch: give loss_iou, not loss_centerness')
        super().__init__(*args, **kwargs)
        del self.loss_centerness
        self.loss_iou = MODELS.build(loss_iou)

    def _init_layers(self) -> None:
        super()._init_layers()
        del self.atss_centerness
        # the parent's init_cfg (Normal std 0.01 on every Conv2d) covers this conv as in the official code
        self.atss_iou = nn.Conv2d(self.feat_channels, self.num_base_priors, self.pred_kernel_size,
                                  padding=self.pred_kernel_size // 2)

    def forward_single(self, x: Tensor, scale: Scale) -> Sequence[Tensor]:
        cls_feat = x
        reg_feat = x
        for cls_conv in self.cls_convs:
            cls_feat = cls_conv(cls_feat)
        for reg_conv in self.reg_convs:
            reg_feat = reg_conv(reg_feat)
        cls_score = self.atss_cls(cls_feat)
        bbox_pred = scale(self.atss_reg(reg_feat)).float()
        iou_pred = self.atss_iou(reg_feat)
        return cls_score, bbox_pred, iou_pred

    def loss_by_feat_single(self, anchors: Tensor, cls_score: Tensor, bbox_pred: Tensor, iou_pred: Tensor,
                            labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
                            avg_factor: float) -> tuple:
        anchors = anchors.reshape(-1, 4)
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels).contiguous()
        bbox_pred = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4)
        iou_pred = iou_pred.permute(0, 2, 3, 1).reshape(-1)
        bbox_targets = bbox_targets.reshape(-1, 4)  # decoded GT boxes (reg_decoded_bbox=True)
        labels = labels.reshape(-1)
        label_weights = label_weights.reshape(-1)

        loss_cls = self.loss_cls(cls_score, labels, label_weights, avg_factor=avg_factor)

        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        if pos.numel() > 0:
            pos_anchors = anchors[pos]
            pos_decoded = self.bbox_coder.decode(pos_anchors, bbox_pred[pos])
            pos_gt = bbox_targets[pos]
            loss_bbox = self.loss_bbox(pos_decoded, pos_gt, avg_factor=avg_factor)
            targets = bbox_overlaps(pos_decoded.detach(), pos_gt, is_aligned=True)
            loss_iou = self.loss_iou(iou_pred[pos], targets, avg_factor=avg_factor)
        else:
            loss_bbox = bbox_pred.sum() * 0
            loss_iou = iou_pred.sum() * 0
        return loss_cls, loss_bbox, loss_iou

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], iou_preds: List[Tensor],
                     batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> dict:
        featmap_sizes = [featmap.size()[-2:] for featmap in bbox_preds]
        assert len(featmap_sizes) == self.prior_generator.num_levels
        device = cls_scores[0].device
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=device)
        (anchor_list, labels_list, label_weights_list, bbox_targets_list, _bbox_weights_list,
         avg_factor) = self.get_targets(anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
                                        batch_gt_instances_ignore=batch_gt_instances_ignore)
        # number of positives over all GPUs, at least 1 (the official code's num_total_samples)
        avg_factor = max(reduce_mean(torch.tensor(avg_factor, dtype=torch.float, device=device)).item(), 1.0)
        losses_cls, losses_bbox, losses_iou = multi_apply(
            self.loss_by_feat_single, anchor_list, cls_scores, bbox_preds, iou_preds, labels_list,
            label_weights_list, bbox_targets_list, avg_factor=avg_factor)
        return dict(loss_cls=losses_cls, loss_bbox=losses_bbox, loss_iou=losses_iou)

    def predict_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                        score_factors: Optional[List[Tensor]] = None, **kwargs) -> InstanceList:
        if score_factors is None:
            raise ValueError('ATSSIoUHead.predict_by_feat needs the IoU logits (the third head output)')
        return super().predict_by_feat(cls_scores, bbox_preds, score_factors=score_factors, **kwargs)
