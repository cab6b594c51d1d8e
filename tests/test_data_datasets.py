"""Generated sets load through the registered mmdet datasets and score as expected under mmdet's metrics."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pgd.data import COCO_CLASSES, AnnotationError, generate_coco, generate_crowdhuman

mmdet_registry = pytest.importorskip("mmdet.registry")


@pytest.fixture(scope="module", autouse=True)
def _mmdet_scope():
    from mmdet.utils import register_all_modules

    import pgd.data.datasets  # noqa: F401  (registers the dataset classes)
    register_all_modules(init_default_scope=True)


PIPELINE = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
            dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape"))]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return generate_coco(tmp_path_factory.mktemp("coco"), seed=0, num_train=4, num_val=40)


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    return generate_crowdhuman(tmp_path_factory.mktemp("crowd"), seed=0, num_train=4, num_val=20)


def _coco_ds(root: Path, **kw):
    cfg = dict(type="ValidatedCocoDataset", data_root=str(root), ann_file="annotations/instances_val.json",
               data_prefix=dict(img="images/val/"), metainfo=dict(classes=COCO_CLASSES), test_mode=True,
               pipeline=PIPELINE)
    cfg.update(kw)
    return mmdet_registry.DATASETS.build(cfg)


def _crowd_ds(root: Path, **kw):
    cfg = dict(type="ValidatedCrowdHumanDataset", data_root=str(root), ann_file="annotation_val.odgt",
               data_prefix=dict(img="Images/"), test_mode=True, pipeline=PIPELINE)
    cfg.update(kw)
    return mmdet_registry.DATASETS.build(cfg)


# ----------------------------------------------------------------------------- COCO
def test_coco_dataset_loads_boxes_and_labels(coco):
    ds = _coco_ds(coco.root)
    data = json.loads(coco.annotations["val"].read_text())
    assert len(ds) == 40
    for i in (0, 5, 19):
        info = ds.get_data_info(i)
        anns = [a for a in data["annotations"] if a["image_id"] == info["img_id"]]
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert [inst["bbox"] for inst in info["instances"]] == expected
        assert [inst["bbox_label"] for inst in info["instances"]] == [a["category_id"] - 1 for a in anns]
    packed = ds[0]
    assert packed["inputs"].shape == (3, 128, 128)
    gt = packed["data_samples"].gt_instances
    np.testing.assert_allclose(gt.bboxes.numpy(), [inst["bbox"] for inst in ds.get_data_info(0)["instances"]])
    assert ds.get_data_info(19)["instances"] == []  # the every-20th empty image


def test_coco_dataset_filters_empty_images_for_training(coco):
    ds = _coco_ds(coco.root, test_mode=False, filter_cfg=dict(filter_empty_gt=True))
    assert len(ds) == 38


def test_coco_dataset_without_class_names_fails_early(coco):
    with pytest.raises(AnnotationError, match=r"instances_val\.json: dataset classes .* are not categories"):
        _coco_ds(coco.root, metainfo=None)


def test_coco_dataset_validates_before_parsing(coco, tmp_path):
    data = json.loads(coco.annotations["val"].read_text())
    data["annotations"][3]["bbox"][2] = -1.0
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val.json").write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(coco.root / "images")
    with pytest.raises(AnnotationError, match=f"annotation id {data['annotations'][3]['id']} .*negative"):
        _coco_ds(tmp_path)


def test_coco_dataset_validate_cfg_tolerates_zero_size_boxes(coco, tmp_path):
    from pgd.data.validate import AnnotationWarning

    data = json.loads(coco.annotations["val"].read_text())
    first = data["annotations"][0]
    first["bbox"][3] = 0.0
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val.json").write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(coco.root / "images")
    with pytest.raises(AnnotationError, match=f"annotation id {first['id']} .*zero width/height"):
        _coco_ds(tmp_path)
    with pytest.warns(AnnotationWarning, match=f"annotation id {first['id']}"):
        ds = _coco_ds(tmp_path, validate_cfg=dict(zero_size="warn"))
    n_gt = sum(a["image_id"] == first["image_id"] for a in data["annotations"])
    info = next(ds.get_data_info(i) for i in range(len(ds)) if ds.get_data_info(i)["img_id"] == first["image_id"])
    assert len(info["instances"]) == n_gt - 1  # mmdet drops the degenerate box


def _coco_predictions(ds, keep=lambda box: True) -> list[dict]:
    samples = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        inst = [x for x in info["instances"] if keep(x["bbox"])]
        boxes = torch.tensor([x["bbox"] for x in inst], dtype=torch.float32).reshape(-1, 4)
        samples.append(dict(img_id=info["img_id"], ori_shape=(info["height"], info["width"]),
                            pred_instances=dict(bboxes=boxes, scores=torch.ones(len(inst)),
                                                labels=torch.tensor([x["bbox_label"] for x in inst],
                                                                    dtype=torch.long))))
    return samples


def _coco_metric(coco, ds, samples) -> dict:
    from mmdet.evaluation import CocoMetric

    metric = CocoMetric(ann_file=str(coco.annotations["val"]), metric="bbox")
    metric.dataset_meta = ds.metainfo
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_coco_metric_gives_100_on_ground_truth(coco):
    ds = _coco_ds(coco.root)
    res = _coco_metric(coco, ds, _coco_predictions(ds))
    for key in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"):
        assert res[f"coco/bbox_{key}"] == 1.0, (key, res)  # also: every scale bucket has ground truth (not -1)


def test_coco_metric_scale_buckets_follow_box_area(coco):
    """Dropping the predictions of large boxes zeroes APl only: area (= box area) drives the buckets."""
    ds = _coco_ds(coco.root)
    res = _coco_metric(coco, ds, _coco_predictions(ds, keep=lambda b: (b[2] - b[0]) * (b[3] - b[1]) < 96**2))
    assert res["coco/bbox_mAP_l"] == 0.0
    assert res["coco/bbox_mAP_s"] == 1.0 and res["coco/bbox_mAP_m"] == 1.0
    assert 0.0 < res["coco/bbox_mAP"] < 1.0


# ----------------------------------------------------------------------------- CrowdHuman
def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().strip().split("\n")]


def test_crowdhuman_dataset_boxes_labels_and_ignore_flags(crowd):
    ds = _crowd_ds(crowd.root)
    recs = _records(crowd.annotations["val"])
    assert len(ds) == 20
    n_ignored = 0
    for i, rec in enumerate(recs):
        info = ds.get_data_info(i)
        assert info["img_id"] == rec["ID"] and (info["height"], info["width"]) == (160, 160)
        for inst, g in zip(info["instances"], rec["gtboxes"], strict=True):
            x, y, w, h = g["fbox"]
            assert inst["bbox"] == [x, y, x + w, y + h]
            ignored = g["tag"] == "mask" or g["extra"].get("ignore", 0) == 1
            assert (inst["ignore_flag"], inst["bbox_label"]) == ((1, -1) if ignored else (0, 0))
            n_ignored += ignored
    assert n_ignored > 0
    sample = ds[1]["data_samples"]
    flags = [inst["ignore_flag"] for inst in ds.get_data_info(1)["instances"]]
    assert len(sample.gt_instances) == flags.count(0) and len(sample.ignored_instances) == flags.count(1)


def test_crowdhuman_dataset_without_cache_reads_headers_and_writes_nothing(crowd, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(crowd.root, root)
    (root / "id_hw_val.json").unlink()
    ds = _crowd_ds(root)
    assert ds.get_data_info(3)["height"] == 160 and not (root / "id_hw_val.json").exists()


def test_crowdhuman_dataset_rejects_stale_size_cache(crowd, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(crowd.root, root)
    cache = json.loads((root / "id_hw_val.json").read_text())
    cache["000004,val"] = [120, 160]
    (root / "id_hw_val.json").write_text(json.dumps(cache))
    with pytest.raises(AnnotationError, match=r"id_hw_val\.json: ID 000004,val: cached .* \[120, 160\]"):
        _crowd_ds(root)


def test_crowdhuman_dataset_validates_before_parsing(crowd, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(crowd.root, root)
    recs = _records(root / "annotation_val.odgt")
    recs[2]["gtboxes"][0]["tag"] = "pedestrian"
    (root / "annotation_val.odgt").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(AnnotationError, match=r"line 3 \(ID 000003,val\), gtboxes\[0\]: unknown tag"):
        _crowd_ds(root)
    with pytest.raises(ValueError, match="train'/'val'"):
        _crowd_ds(root, ann_file="people.odgt")


def test_crowdhuman_metric_on_ground_truth(crowd):
    """GT full boxes as detections: JI 1, MR 0, and AP = 1 - 1/N.

    mmdet's (CrowdDet's) AP integrates the PR curve by trapezoids starting at the first detection
    (recall 1/N), not at recall 0, so a perfect detector scores (N - 1) / N over N non-ignored people.
    """
    from mmdet.evaluation import CrowdHumanMetric

    ds = _crowd_ds(crowd.root)
    samples = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        boxes = [x["bbox"] for x in info["instances"] if not x["ignore_flag"]]
        samples.append(dict(img_id=info["img_id"], ori_shape=(info["height"], info["width"]),
                            pred_instances=dict(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                                scores=torch.ones(len(boxes)))))
    n_people = sum(len(s["pred_instances"]["bboxes"]) for s in samples)
    metric = CrowdHumanMetric(ann_file=str(crowd.annotations["val"]), metric=["AP", "MR", "JI"], num_ji_process=1)
    metric.process({}, samples)
    with np.errstate(divide="ignore"):  # MR takes log(0) when the miss rate is 0
        res = metric.evaluate(len(samples))
    assert res["crowd_human/mAP"] == pytest.approx(1 - 1 / n_people, abs=1e-4)
    assert res["crowd_human/mMR"] == 0.0
    assert res["crowd_human/JI"] == pytest.approx(1.0, abs=1e-4)
