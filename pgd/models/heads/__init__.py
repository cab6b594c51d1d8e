"""Custom detection heads registered in mmdet's MODELS."""
from .atss_iou_head import ATSSIoUHead

__all__ = ['ATSSIoUHead']
