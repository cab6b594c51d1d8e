"""Synthetic dataset generators: determinism, COCO / CrowdHuman format, scale buckets, occlusion, empties."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pgd.data import COCO_CLASSES, generate_coco, generate_crowdhuman, validate_coco, validate_odgt
from pgd.data.cli import main as data_main
from pgd.data.render import polygon_mask, tight_box


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [x, y, w, h] boxes."""
    a1, b1 = a[:, None, :2], b[None, :, :2]
    a2, b2 = a1 + a[:, None, 2:], b1 + b[None, :, 2:]
    wh = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return generate_coco(tmp_path_factory.mktemp("coco"), seed=0, num_train=20, num_val=40)


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    return generate_crowdhuman(tmp_path_factory.mktemp("crowd"), seed=0, num_train=20, num_val=20)


# ----------------------------------------------------------------------------- raster primitives
def test_polygon_mask_and_tight_box_hand_computed():
    square = polygon_mask((10, 10), [np.array([[2, 2], [5, 2], [5, 5], [2, 5]])])
    assert square.sum() == 16 and tight_box(square) == (2, 2, 4, 4)  # pixels 2..5 inclusive: w = 4
    ring = polygon_mask((10, 10), [np.array([[2, 2], [7, 2], [7, 7], [2, 7]])],
                        [np.array([[4, 4], [5, 4], [5, 5], [4, 5]])])
    assert ring.sum() == 36 - 4 and tight_box(ring) == (2, 2, 6, 6)
    assert tight_box(np.zeros((4, 4), bool)) is None


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_different_seed_different(tmp_path):
    kw = dict(num_train=6, num_val=3, image_size=96)
    a = _hashes(generate_coco(tmp_path / "a", seed=3, **kw).root)
    b = _hashes(generate_coco(tmp_path / "b", seed=3, **kw).root)
    c = _hashes(generate_coco(tmp_path / "c", seed=4, **kw).root)
    assert len(a) == 6 + 3 + 2 and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)

    kw = dict(num_train=4, num_val=3, image_size=96)
    a = _hashes(generate_crowdhuman(tmp_path / "ca", seed=3, **kw).root)
    b = _hashes(generate_crowdhuman(tmp_path / "cb", seed=3, **kw).root)
    c = _hashes(generate_crowdhuman(tmp_path / "cc", seed=4, **kw).root)
    assert len(a) == 4 + 3 + 4 and a == b  # jpgs + 2 odgt + 2 id_hw caches
    assert all(a[k] != c[k] for k in a if k.endswith((".jpg", ".odgt")))


def test_images_do_not_depend_on_split_size_and_stale_files_are_removed(tmp_path):
    big = _hashes(generate_coco(tmp_path / "x", seed=1, num_train=8, num_val=2, image_size=64).root)
    small_root = generate_coco(tmp_path / "x", seed=1, num_train=5, num_val=2, image_size=64).root
    small = _hashes(small_root)
    assert sorted(p for p in small if p.startswith("images/train")) == [f"images/train/{i:06d}.png"
                                                                        for i in range(1, 6)]
    assert all(small[k] == big[k] for k in small if k.endswith(".png"))  # per-image random streams
    fresh = _hashes(generate_coco(tmp_path / "y", seed=1, num_train=5, num_val=2, image_size=64).root)
    assert small == fresh


# ----------------------------------------------------------------------------- COCO format and content
def test_coco_fields_and_conventions(coco):
    for split, n in (("train", 20), ("val", 40)):
        data = json.loads(coco.annotations[split].read_text())
        assert list(data) == ["info", "licenses", "images", "annotations", "categories"]
        assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5, 6]
        assert tuple(c["name"] for c in data["categories"]) == COCO_CLASSES
        assert [im["id"] for im in data["images"]] == list(range(1, n + 1))
        assert all(set(im) == {"id", "file_name", "width", "height"} for im in data["images"])
        anns = data["annotations"]
        assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
        assert all(set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} for a in anns)
        boxes = np.array([a["bbox"] for a in anns])
        np.testing.assert_array_equal([a["area"] for a in anns], boxes[:, 2] * boxes[:, 3])  # area = box area
        assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 128).all()
        assert all(a["iscrowd"] == 0 for a in anns)
        for im in data["images"][:3]:
            with Image.open(coco.images[split] / im["file_name"]) as f:
                assert f.size == (128, 128) and f.mode == "RGB"
        validate_coco(coco.annotations[split], coco.images[split], check_image_sizes=True)


def test_coco_scale_buckets_populated_at_default_size(coco):
    data = json.loads(coco.annotations["val"].read_text())
    area = np.array([a["area"] for a in data["annotations"]])
    small, large = (area < 32**2).sum(), (area >= 96**2).sum()
    assert small > 0 and (len(area) - small - large) > 0 and large > 0
    # bucket ranges keep clear of the thresholds, so +-1 px rasterisation cannot move an object across one
    assert not ((area > 29**2 + 60) & (area < 35**2 - 70)).any()
    assert coco.stats["val"]["buckets"] == dict(small=int(small), medium=int(len(area) - small - large),
                                                large=int(large))
    sides = np.sqrt(area)
    assert sides.min() >= 7 and sides.max() <= 118


def test_coco_empty_images_every_twentieth(coco):
    data = json.loads(coco.annotations["val"].read_text())
    with_objects = {a["image_id"] for a in data["annotations"]}
    empty = [im["id"] for im in data["images"] if im["id"] not in with_objects]
    assert empty == [20, 40]  # index % 20 == 19: 5 % of the images


def test_coco_objects_overlap_and_all_categories_present(coco):
    data = json.loads(coco.annotations["train"].read_text())
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    overlapping = 0
    for boxes in by_image.values():
        iou = _iou(np.array(boxes), np.array(boxes))
        overlapping += int((np.triu(iou, 1) > 0).any())
    assert overlapping >= 5  # amodal boxes of partially hidden objects overlap their occluders
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, 7))
    assert coco.stats["train"]["occluded"] > 0


def test_coco_pixels_inside_boxes_differ_from_background(coco):
    """Objects are drawn where the boxes say: a box's pixels are not just background texture."""
    data = json.loads(coco.annotations["val"].read_text())
    img = np.asarray(Image.open(coco.images["val"] / "000001.png"), dtype=np.float32)
    boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == 1]
    assert boxes
    outside = np.ones(img.shape[:2], bool)
    for x, y, w, h in boxes:
        outside[int(y):int(y + h), int(x):int(x + w)] = False
    bg = img[outside].mean(0)
    for x, y, w, h in boxes:
        patch = img[int(y):int(y + h), int(x):int(x + w)].reshape(-1, 3)
        assert np.abs(patch - bg).sum(1).max() > 60


def test_styles(tmp_path):
    """'hard' has more tiny objects and more objects per image than the default 'easy'; both keep the format."""
    easy = generate_coco(tmp_path / "e", seed=0, num_train=1, num_val=40)
    hard = generate_coco(tmp_path / "h", seed=0, num_train=1, num_val=40, style="hard")
    info = json.loads(hard.annotations["val"].read_text())["info"]
    assert info["generator"]["style"] == "hard"
    e, h = easy.stats["val"], hard.stats["val"]
    assert h["buckets"]["small"] / h["annotations"] > e["buckets"]["small"] / e["annotations"]
    assert h["annotations"] > e["annotations"]
    validate_coco(hard.annotations["val"], hard.images["val"])
    with pytest.raises(ValueError, match="unknown style 'medium'"):
        generate_coco(tmp_path / "x", style="medium")


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        generate_coco(tmp_path, image_size=32)
    with pytest.raises(ValueError, match="num_train"):
        generate_crowdhuman(tmp_path, num_train=0)


# ----------------------------------------------------------------------------- CrowdHuman format and content
def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().strip().split("\n")]


def test_crowdhuman_layout_and_fields(crowd):
    root = crowd.root
    for split in ("train", "val"):
        recs = _records(root / f"annotation_{split}.odgt")
        assert len(recs) == 20 and all(list(r) == ["ID", "gtboxes"] and r["gtboxes"] for r in recs)
        assert recs[0]["ID"] == f"000001,{split}"
        id_hw = json.loads((root / f"id_hw_{split}.json").read_text())
        for r in recs:
            with Image.open(root / "Images" / f"{r['ID']}.jpg") as f:
                assert f.format == "JPEG" and [f.height, f.width] == id_hw[r["ID"]] == [160, 160]
            for g in r["gtboxes"]:
                assert list(g) == ["fbox", "tag", "hbox", "extra", "vbox", "head_attr"]
                assert g["tag"] in ("person", "mask")
                assert all(isinstance(v, int) for k in ("fbox", "vbox", "hbox") for v in g[k])
        validate_odgt(root / f"annotation_{split}.odgt", root / "Images")


def test_crowdhuman_box_geometry(crowd):
    boxes = [g for split in ("train", "val") for r in _records(crowd.root / f"annotation_{split}.odgt")
             for g in r["gtboxes"]]
    people = [g for g in boxes if g["tag"] == "person"]
    f = np.array([g["fbox"] for g in people], float)
    v = np.array([g["vbox"] for g in people], float)
    h = np.array([g["hbox"] for g in people], float)
    # visible pixels are a subset of the full figure, and the head is part of the figure
    for inner in (v, h):
        assert (inner[:, :2] >= f[:, :2]).all() and (inner[:, :2] + inner[:, 2:] <= f[:, :2] + f[:, 2:]).all()
    assert (v[:, :2] >= 0).all() and (v[:, :2] + v[:, 2:] <= 160).all()
    assert ((f[:, 1] + f[:, 3]) > 160).any()  # some full boxes run past the bottom edge, as in CrowdHuman
    ratio = v[:, 2] * v[:, 3] / (f[:, 2] * f[:, 3])
    assert (ratio < 0.5).mean() > 0.1 and (ratio < 0.9).mean() > 0.3  # heavy occlusion is common
    # persons: roughly 1 : 2.5 (w : h) figures
    assert 2.0 < np.median(f[:, 3] / f[:, 2]) < 3.5
    ignored = [g for g in people if g["extra"].get("ignore")]
    masks = [g for g in boxes if g["tag"] == "mask"]
    assert ignored and masks
    assert all(g["extra"]["ignore"] == 1 and g["fbox"] == g["vbox"] == g["hbox"] for g in masks)


def test_crowdhuman_crowds_overlap_heavily(crowd):
    recs = _records(crowd.root / "annotation_train.odgt")
    best = []
    for r in recs:
        f = np.array([g["fbox"] for g in r["gtboxes"] if g["tag"] == "person"], float)
        if len(f) > 1:
            best.append(np.triu(_iou(f, f), 1).max())
    assert max(best) > 0.5 and np.mean(np.array(best) > 0.3) > 0.3


# ----------------------------------------------------------------------------- CLI
def test_cli_generates_and_reports(tmp_path, capsys):
    assert data_main(["coco", "--out", str(tmp_path / "c"), "--num-train", "2", "--num-val", "1",
                      "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "instances_train.json" in out and "instances_val.json" in out and "generated in" in out
    assert (tmp_path / "c/images/train/000002.png").is_file()
    assert data_main(["crowdhuman", "--out", str(tmp_path / "h"), "--num-train", "1", "--num-val", "1",
                      "--image-size", "64"]) == 0
    assert (tmp_path / "h/Images/000001,val.jpg").is_file()
    assert data_main(["coco", "--out", str(tmp_path / "d"), "--image-size", "16"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_import_pgd_data_stays_light():
    """`pgd data` must not pay for mmdet: only pgd.data.datasets imports it."""
    import subprocess
    import sys

    code = "import sys, pgd.data, pgd.data.cli; assert not [m for m in sys.modules if m.startswith('mmdet')]"
    subprocess.run([sys.executable, "-c", code], check=True)
