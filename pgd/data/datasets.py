"""mmdet datasets that validate their annotation file before parsing it (registered in mmdet's DATASETS).

Configs use ``type='ValidatedCocoDataset'`` / ``type='ValidatedCrowdHumanDataset'`` with the same arguments as
mmdet's ``CocoDataset`` / ``CrowdHumanDataset``; a malformed file then fails at load time with an
:class:`~pgd.data.validate.AnnotationError` naming the file and record, instead of deep inside training.
"""
from __future__ import annotations

import os.path as osp

from mmdet.datasets import CocoDataset, CrowdHumanDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path

from .validate import AnnotationError, validate_coco, validate_odgt


@DATASETS.register_module()
class ValidatedCocoDataset(CocoDataset):
    """``CocoDataset`` + :func:`validate_coco` (boxes, ids, categories, image files) before parsing.

    Also refuses class names that are not categories of the file: ``CocoDataset`` silently drops every annotation
    of such a class, so a config that forgets ``metainfo=dict(classes=...)`` would otherwise train on nothing.
    ``validate_cfg`` holds keyword arguments of :func:`validate_coco` (e.g. ``dict(zero_size='warn')`` for real
    COCO train2017, which has two height-0 boxes that mmdet drops anyway).
    """

    def __init__(self, *args, validate_cfg: dict | None = None, **kwargs):
        self.validate_cfg = dict(validate_cfg or {})
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get("img") or self.data_root
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            data = validate_coco(local_path, img_dir, **self.validate_cfg)
        names = [c.get("name") for c in data["categories"]]
        missing = [c for c in self.metainfo["classes"] if c not in names]
        del data  # parsed again by the COCO API below; do not hold two copies of a large file
        if missing:
            raise AnnotationError(
                f"{self.ann_file}: dataset classes {missing[:10]} are not categories of this file "
                f"(its categories: {names[:20]}); set metainfo=dict(classes=...) in the dataset config")
        return super().load_data_list()


@DATASETS.register_module()
class ValidatedCrowdHumanDataset(CrowdHumanDataset):
    """``CrowdHumanDataset`` + :func:`validate_odgt` (tags, fbox/vbox/hbox, image files) before parsing.

    Image sizes are read from the JPEG headers during validation, which (a) replaces mmdet's decode-every-image
    pass when no ``id_hw_*.json`` cache exists (and so writes no cache file as a side effect), and (b) catches a
    stale cache whose sizes no longer match the images. ``validate_cfg`` holds keyword arguments of
    :func:`validate_odgt` (``tolerance``, ``zero_size``, ``allow_empty``).
    """

    def __init__(self, data_root, ann_file, extra_ann_file=None, validate_cfg: dict | None = None, **kwargs):
        name = osp.basename(ann_file)
        if extra_ann_file is None and "train" not in name and "val" not in name:
            raise ValueError(f"{ann_file}: CrowdHumanDataset derives its id_hw cache name from 'train'/'val' in "
                             "the annotation file name; rename the file or pass extra_ann_file")
        self._cache_name = extra_ann_file
        self.validate_cfg = dict(validate_cfg or {})
        super().__init__(data_root=data_root, ann_file=ann_file, extra_ann_file=extra_ann_file, **kwargs)

    def load_data_list(self) -> list[dict]:
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            index = validate_odgt(local_path, self.data_prefix.get("img") or self.data_root, **self.validate_cfg)
        if self.extra_ann_exist:
            cache = self._cache_name or getattr(self, "extra_ann_file", "extra_ann_file")
            for image_id, hw in index.sizes.items():
                cached = self.extra_anns.get(image_id)
                if cached is None or tuple(cached) != hw:
                    raise AnnotationError(f"{cache}: ID {image_id}: cached (height, width) {cached} does not match "
                                          f"the image's {hw}; delete the stale cache file")
        else:
            self.extra_anns = {image_id: list(hw) for image_id, hw in index.sizes.items()}
            self.extra_ann_exist = True
        return super().load_data_list()
