"""Synthetic datasets (COCO and CrowdHuman formats) and annotation validation.

``generate_coco(out, seed, ...)`` and ``generate_crowdhuman(out, seed, ...)`` write a dataset and return a
:class:`GeneratedDataset` (root, per-split annotation files and image folders, counts). ``pgd.data.validate`` checks
annotation files; ``pgd.data.datasets`` (imports mmdet) registers the validating dataset classes.
"""
from .synth_coco import CLASSES as COCO_CLASSES
from .synth_coco import GeneratedDataset, generate_coco
from .synth_crowdhuman import generate_crowdhuman
from .validate import AnnotationError, validate_coco, validate_odgt

__all__ = ["COCO_CLASSES", "AnnotationError", "GeneratedDataset", "generate_coco", "generate_crowdhuman",
           "validate_coco", "validate_odgt"]
