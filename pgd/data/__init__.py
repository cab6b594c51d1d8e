"""Synthetic datasets (COCO and CrowdHuman formats) and annotation validation."""
