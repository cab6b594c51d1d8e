"""Seconds to validate a COCO-sized annotation file (default 100k images, 800k annotations).

    python benchmarks/bench_validate.py [--images 100000 --annotations 800000] [--dir D]
    python benchmarks/bench_validate.py --odgt [--images 15000 --annotations 340000]   (CrowdHuman train size)

Prints: JSON write time (not part of validation), validate_coco without the image-file check, with it (one empty
file per image), and mmdet-style plain json.load for comparison. Files go to a temporary directory unless --dir.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pgd.data.validate import validate_coco, validate_odgt


def _write_annotations(path: Path, n_img: int, n_ann: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    wh_img = rng.integers(200, 641, size=(n_img, 2))
    owner = rng.integers(0, n_img, size=n_ann)
    frac = rng.uniform(0.02, 0.6, size=(n_ann, 2))
    wh = np.maximum(1.0, np.round(frac * wh_img[owner], 2))
    xy = np.round(rng.uniform(0, 1, size=(n_ann, 2)) * (wh_img[owner] - wh), 2)
    images = [dict(id=i + 1, file_name=f"{i + 1:012d}.jpg", width=int(w), height=int(h))
              for i, (w, h) in enumerate(wh_img.tolist())]
    anns = [dict(id=k + 1, image_id=int(o) + 1, category_id=int(c), bbox=[x, y, w, h], area=w * h, iscrowd=0)
            for k, (o, c, (x, y), (w, h)) in enumerate(zip(owner.tolist(), rng.integers(1, 81, n_ann).tolist(),
                                                            xy.tolist(), wh.tolist()))]
    cats = [dict(id=i, name=f"c{i}", supercategory="x") for i in range(1, 81)]
    with open(path, "w") as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)


def _write_odgt(path: Path, n_img: int, n_box: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    owner = np.sort(rng.integers(0, n_img, size=n_box))
    f = np.column_stack([rng.integers(-50, 500, n_box), rng.integers(-50, 300, n_box),
                         rng.integers(60, 200, n_box), rng.integers(60, 400, n_box)]).tolist()
    v = np.column_stack([rng.integers(0, 400, n_box), rng.integers(0, 300, n_box),
                         rng.integers(5, 200, n_box), rng.integers(5, 180, n_box)]).tolist()
    recs = [dict(ID=f"{i:06d},x", gtboxes=[]) for i in range(n_img)]
    for o, fb, vb in zip(owner.tolist(), f, v):
        recs[o]["gtboxes"].append(dict(fbox=fb, tag="person", hbox=[fb[0], fb[1], 10, 10],
                                       extra=dict(box_id=0, occ=0), vbox=vb, head_attr=dict(ignore=0)))
    for r in recs:
        if not r["gtboxes"]:
            r["gtboxes"].append(dict(fbox=[0, 0, 5, 5], tag="mask", hbox=[0, 0, 5, 5], extra=dict(ignore=1),
                                     vbox=[0, 0, 5, 5], head_attr={}))
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _bench_odgt(tmp: Path, n_img: int, n_box: int) -> None:
    from PIL import Image

    ann = tmp / "annotation_train.odgt"
    _write_odgt(ann, n_img, n_box)
    t = time.perf_counter()
    validate_odgt(ann)
    print(f"validate_odgt {n_img} records / {n_box} boxes without images: {time.perf_counter() - t:.2f} s")
    img_dir = tmp / "Images"
    img_dir.mkdir()
    Image.new("RGB", (640, 480)).save(img_dir / "proto.jpg")
    proto = (img_dir / "proto.jpg").read_bytes()
    for i in range(n_img):
        (img_dir / f"{i:06d},x.jpg").write_bytes(proto)
    t = time.perf_counter()
    validate_odgt(ann, img_dir)
    print(f"validate_odgt with image files (JPEG headers read for sizes): {time.perf_counter() - t:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--annotations", type=int, default=800_000)
    p.add_argument("--dir", type=Path)
    p.add_argument("--odgt", action="store_true", help="benchmark validate_odgt instead")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        if args.odgt:
            _bench_odgt(tmp, args.images, args.annotations)
            return
        ann = tmp / "instances.json"
        t = time.perf_counter()
        _write_annotations(ann, args.images, args.annotations)
        print(f"wrote {args.images} images / {args.annotations} annotations "
              f"({ann.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        with open(ann) as f:
            json.load(f)
        print(f"plain json.load: {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        validate_coco(ann)
        print(f"validate_coco without image files: {time.perf_counter() - t:.2f} s")
        img_dir = tmp / "images"
        img_dir.mkdir()
        for i in range(1, args.images + 1):
            (img_dir / f"{i:012d}.jpg").touch()
        t = time.perf_counter()
        validate_coco(ann, img_dir)
        print(f"validate_coco with the image-file check: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
