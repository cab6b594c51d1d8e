"""PGD core: pure torch (no mmdet / mmcv / mmengine), batched over images N, objects M and locations A.

A = all FPN levels concatenated, each row-major, finest first (the `DensePredictions` layout).
"""
from .attention import channel_attention, spatial_attention
from .candidates import Candidates, prediction_candidates
from .geometry import box_iou_aligned_grid, inside_boxes
from .imitation import pgd_cls_loss, pgd_distill_loss, pgd_reg_loss
from .pgw import gaussian_importance, normalise_by_count, pgw_importance, split_levels, topk_candidates
from .quality import quality_score
from .regions import background_mask, foreground_importance
from .settings import BRANCHES, DETECTORS, FG_STRATEGIES, PGDSettings, PGWConfig

__all__ = [
    "BRANCHES", "Candidates", "DETECTORS", "FG_STRATEGIES", "PGDSettings", "PGWConfig", "background_mask",
    "box_iou_aligned_grid", "channel_attention", "foreground_importance", "gaussian_importance", "inside_boxes",
    "normalise_by_count", "pgd_cls_loss", "pgd_distill_loss", "pgd_reg_loss", "pgw_importance",
    "prediction_candidates", "quality_score", "spatial_attention", "split_levels", "topk_candidates",
]
