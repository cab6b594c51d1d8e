"""Label assigners registered in mmdet's TASK_UTILS."""
from .ddod_topk_assigner import DDODTopkAssigner

__all__ = ['DDODTopkAssigner']
