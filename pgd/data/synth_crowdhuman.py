"""Synthetic crowd set in CrowdHuman's layout: person figures in perspective, crowds, ignore regions.

Layout written under ``out`` (exactly what mmdet 3.3's ``CrowdHumanDataset`` / ``CrowdHumanMetric`` read)::

    annotation_train.odgt  annotation_val.odgt      one JSON record per line: {"ID": ..., "gtboxes": [...]}
    Images/<ID>.jpg                                 IDs look like "000001,train" (CrowdHuman IDs contain a comma)
    id_hw_train.json  id_hw_val.json                {ID: [height, width]}: the cache CrowdHumanDataset otherwise
                                                    builds on first load by decoding every image

Each ``gtboxes`` entry has ``tag`` ('person' or 'mask'), ``fbox`` / ``vbox`` / ``hbox`` as integer ``[x, y, w, h]``,
``extra`` (``box_id``, ``occ``, and ``ignore: 1`` where ignored) and ``head_attr`` (``ignore``, ``occ``, ``unsure``):

* ``fbox`` is the full (amodal) body box; like CrowdHuman's, it may extend past the image border for people
  cut off by the frame (only at the bottom and sides; heads are always inside).
* ``vbox`` is the tight box of the person's pixels still visible after everyone in front is drawn.
* ``hbox`` is the full head box.
* People with less than 10 % of their pixels visible get ``extra.ignore = 1``; people with none are dropped.
* A distant crowd of tiny figures, when present, is one ``tag: 'mask'`` entry (``extra.ignore = 1``, all three
  boxes equal to the region), as CrowdHuman marks crowds too dense to annotate.
* Every image has at least one entry: CrowdHumanMetric cannot evaluate an image without ``gtboxes``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import render
from .io import remove_stale, write_jpeg, write_json, write_lines_json
from .synth_coco import GeneratedDataset

SPLITS = ("train", "val")
IGNORE_BELOW_VISIBLE = 0.10
MAX_PEOPLE = 16
FILE_PATTERN = r"\d{{6}},{split}\.jpg"
SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                 [92, 58, 32]], dtype=np.float32)
# Part labels drawn into one 'L' canvas per person.
HEAD, TORSO, ARMS, LEGS = 1, 2, 3, 4


def image_id(index: int, split: str) -> str:
    return f"{index + 1:06d},{split}"


def _person_parts(cx: float, top: float, h: float, rng: np.random.Generator) -> list[tuple[int, str, list]]:
    """Polygons / ellipses of one standing figure whose head top is at (cx, top) and height is h."""
    lean = rng.uniform(-0.04, 0.04) * h
    def px(dx: float, y: float) -> tuple[float, float]:  # leaning body: shift grows towards the head
        return cx + dx * h + lean * (1 - y), top + y * h

    arm_out = rng.uniform(0.16, 0.24)
    leg_out = rng.uniform(0.03, 0.10)
    return [
        (LEGS, "poly", [px(-0.10, 0.50), px(-0.01, 0.50), px(-leg_out + 0.05, 1.0), px(-leg_out - 0.04, 1.0)]),
        (LEGS, "poly", [px(0.01, 0.50), px(0.10, 0.50), px(leg_out + 0.04, 1.0), px(leg_out - 0.05, 1.0)]),
        (TORSO, "poly", [px(-0.15, 0.15), px(0.15, 0.15), px(0.11, 0.53), px(-0.11, 0.53)]),
        (ARMS, "poly", [px(-0.15, 0.15), px(-0.10, 0.17), px(-arm_out + 0.05, 0.50), px(-arm_out, 0.50)]),
        (ARMS, "poly", [px(0.15, 0.15), px(0.10, 0.17), px(arm_out - 0.05, 0.50), px(arm_out, 0.50)]),
        (HEAD, "ellipse", [px(-0.055, 0.0), px(0.055, 0.14)]),
    ]


def _draw_person(canvas_shape: tuple[int, int], pad: int, cx: float, top: float, h: float,
                 rng: np.random.Generator) -> np.ndarray:
    """(H + 2 pad, W + 2 pad) uint8 label map of one figure (0 = not the figure)."""
    canvas = Image.new("L", (canvas_shape[1], canvas_shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for label, kind, pts in _person_parts(cx + pad, top + pad, h, rng):
        if kind == "poly":
            draw.polygon(pts, fill=label)
        else:
            (x0, y0), (x1, y1) = pts
            draw.ellipse([x0, y0, x1, y1], fill=label)
    return np.asarray(canvas, dtype=np.uint8)


def _layout(rng: np.random.Generator, size: int, horizon: float, k: float) -> list[tuple[float, float]]:
    """(centre x, foot y) of every person: a few loose people or rows of tightly packed ones."""
    def foot_range(min_h: float) -> tuple[float, float]:
        return horizon + min_h / k, size + 0.2 * 0.8 * size

    people = []
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 5))):
            people.append((rng.uniform(0.1, 0.9) * size, rng.uniform(*foot_range(14))))
    else:
        for _ in range(int(rng.integers(1, 4))):
            foot = rng.uniform(*foot_range(18))
            h = k * (foot - horizon)
            spacing = rng.uniform(0.12, 0.3) * h  # under a body width (~0.3 h): neighbours overlap heavily
            n = int(rng.integers(3, 8))
            x0 = rng.uniform(-0.2, 1.0) * size
            for j in range(n):
                people.append((x0 + j * spacing + rng.normal(0, 0.03 * h), foot + rng.normal(0, 0.04 * h)))
    lo, hi = foot_range(12)
    return [(x, min(max(f, lo), hi)) for x, f in people if 0.02 * size < x < 0.98 * size][:MAX_PEOPLE]


def _paint_person(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    h, w = labels.shape
    skin = SKIN[rng.integers(len(SKIN))] * rng.uniform(0.85, 1.1)
    shirt = render.random_colour(rng, value=(0.2, 1.0), sat=(0.0, 1.0))
    shirt2 = shirt * rng.uniform(0.4, 0.8)
    trousers = render.random_colour(rng, value=(0.1, 0.6), sat=(0.0, 0.7))
    render.paint(img, labels == HEAD, skin)
    render.paint(img, labels == TORSO, render.texture(rng, (h, w), shirt, shirt2, kinds=("solid", "stripes", "noise")))
    render.paint(img, labels == ARMS, shirt if rng.random() < 0.6 else skin)
    render.paint(img, labels == LEGS, trousers)


def _street(rng: np.random.Generator, size: int, horizon: float) -> np.ndarray:
    sky = render.background(rng, (size, size), value=(0.5, 0.95))
    ground = render.background(rng, (size, size), value=(0.15, 0.6))
    rows = np.arange(size)[:, None, None]
    img = np.where(rows < horizon, sky, ground)
    render.clutter(rng, img, int(rng.integers(2, 7)))
    return img


def _poles(rng: np.random.Generator, img: np.ndarray, horizon: float, count: int) -> np.ndarray:
    """Person-sized vertical distractors (poles, bins, sign posts); returns their union mask."""
    size = img.shape[0]
    union = np.zeros(img.shape[:2], dtype=bool)
    for _ in range(count):
        x = rng.uniform(0, size)
        foot = rng.uniform(horizon + 5, size)
        height = rng.uniform(0.3, 1.2) * (foot - horizon)
        width = rng.uniform(1.5, 4.0) if rng.random() < 0.6 else rng.uniform(0.15, 0.4) * height
        mask = render.polygon_mask(img.shape[:2], [np.array([[x, foot - height], [x + width, foot - height],
                                                             [x + width, foot], [x, foot]])])
        render.paint(img, mask, render.random_colour(rng, value=(0.05, 0.9), sat=(0.0, 0.6)))
        union |= mask
    return union


def _far_crowd(rng: np.random.Generator, img: np.ndarray, horizon: float, pad: int) -> list[int] | None:
    """Dense cluster of tiny figures near the horizon; returns its [x, y, w, h] box (the ignore region)."""
    size = img.shape[0]
    x0 = rng.uniform(0.0, 0.6) * size
    width = rng.uniform(0.2, 0.4) * size
    region = np.zeros(img.shape[:2], dtype=bool)
    shape = (size + 2 * pad, size + 2 * pad)
    for _ in range(int(rng.integers(8, 20))):
        h = rng.uniform(5, 10)
        foot = horizon + rng.uniform(0, 6)
        labels = _draw_person(shape, pad, rng.uniform(x0, x0 + width), foot - h, h, rng)
        labels = labels[pad:pad + size, pad:pad + size]
        _paint_person(img, labels, rng)
        region |= labels > 0
    box = render.tight_box(region)
    return None if box is None else list(box)


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict]]:
    """One image and its ``gtboxes`` records."""
    pad = size // 2
    shape = (size + 2 * pad, size + 2 * pad)
    horizon = rng.uniform(0.2, 0.4) * size
    k = rng.uniform(0.55, 0.85) * size / (size - horizon)  # height per pixel of foot below the horizon
    img = _street(rng, size, horizon)
    _poles(rng, img, horizon, int(rng.integers(0, 4)))
    ignore_region = _far_crowd(rng, img, horizon, pad) if rng.random() < 0.35 else None

    people = sorted(_layout(rng, size, horizon, k), key=lambda p: p[1])  # far (small foot y) drawn first
    owner = np.full((size, size), -1, dtype=np.int32)
    figures = []
    for idx, (cx, foot) in enumerate(people):
        h = k * (foot - horizon)
        labels = _draw_person(shape, pad, cx, foot - h, h, rng)
        inside = labels[pad:pad + size, pad:pad + size]
        _paint_person(img, inside, rng)
        owner[inside > 0] = idx
        figures.append(labels)
    if rng.random() < 0.3:  # poles in front of the crowd also hide people
        owner[_poles(rng, img, horizon, int(rng.integers(1, 3)))] = -1

    gtboxes = []
    for idx, labels in enumerate(figures):
        visible = owner == idx
        full_px = int((labels > 0).sum())
        vis_px = int(visible.sum())
        if vis_px == 0:
            continue
        fx, fy, fw, fh = render.tight_box(labels > 0)
        hx, hy, hw, hh = render.tight_box(labels == HEAD)
        head_vis = float((visible & (labels[pad:pad + size, pad:pad + size] == HEAD)).sum()) / max(
            int((labels == HEAD).sum()), 1)
        frac = vis_px / full_px
        extra = dict(box_id=len(gtboxes), occ=int(frac < 0.95))
        if frac < IGNORE_BELOW_VISIBLE:
            extra["ignore"] = 1
        gtboxes.append(dict(fbox=[fx - pad, fy - pad, fw, fh], tag="person", hbox=[hx - pad, hy - pad, hw, hh],
                            extra=extra, vbox=list(render.tight_box(visible)),
                            head_attr=dict(ignore=0, occ=int(head_vis < 0.5), unsure=0)))
    if ignore_region is not None:
        gtboxes.append(dict(fbox=ignore_region, tag="mask", hbox=list(ignore_region),
                            extra=dict(box_id=len(gtboxes), occ=0, ignore=1), vbox=list(ignore_region),
                            head_attr={}))
    return render.finish(img, rng, sensor_noise=3.0), gtboxes


def render_person_example(rng: np.random.Generator, size: int, backdrop: np.ndarray | None = None) -> np.ndarray:
    """One figure of this set, 30-85 % of the image tall, for classification pretraining.

    Drawn on a street (this set's look) or on ``backdrop``, with 0-2 neighbours of about its height behind it,
    overlapping it as the set's crowds do; heads and feet stay inside the image (arms may leave it sideways).
    """
    pad = size // 2
    shape = (size + 2 * pad, size + 2 * pad)
    img = _street(rng, size, rng.uniform(0.2, 0.4) * size) if backdrop is None else backdrop
    h = rng.uniform(0.3, 0.85) * size
    cx = rng.uniform(0.35, 0.65) * size
    top = rng.uniform(0.02 * size, 0.98 * size - h)
    for _ in range(int(rng.integers(0, 3))):  # behind, so drawn first
        nh = h * rng.uniform(0.8, 1.1)
        ncx = cx + rng.choice((-1.0, 1.0)) * rng.uniform(0.15, 0.35) * h
        ntop = float(np.clip(top + h - nh + rng.normal(0, 0.03 * h), 0.02 * size, 0.98 * size - nh))
        labels = _draw_person(shape, pad, ncx, ntop, nh, rng)
        _paint_person(img, labels[pad:pad + size, pad:pad + size], rng)
    labels = _draw_person(shape, pad, cx, top, h, rng)
    _paint_person(img, labels[pad:pad + size, pad:pad + size], rng)
    return render.finish(img, rng, sensor_noise=3.0)


def generate_split(out: Path, split: str, num_images: int, seed: int, image_size: int) -> tuple[Path, dict]:
    img_dir = out / "Images"
    img_dir.mkdir(parents=True, exist_ok=True)
    split_code = SPLITS.index(split)
    records, id_hw, names = [], {}, set()
    stats = dict(images=num_images, persons=0, ignored_persons=0, mask_regions=0, occluded=0)
    for index in range(num_images):
        rng = np.random.default_rng([seed, 1, split_code, index])
        gtboxes: list[dict] = []
        while not gtboxes:  # a scene whose people all ended up hidden is redrawn (same stream: deterministic)
            pixels, gtboxes = render_image(rng, image_size)
        rid = image_id(index, split)
        names.add(f"{rid}.jpg")
        write_jpeg(img_dir / f"{rid}.jpg", pixels)
        records.append(dict(ID=rid, gtboxes=gtboxes))
        id_hw[rid] = [image_size, image_size]
        for g in gtboxes:
            if g["tag"] == "mask":
                stats["mask_regions"] += 1
            elif g["extra"].get("ignore", 0):
                stats["ignored_persons"] += 1
            else:
                stats["persons"] += 1
                stats["occluded"] += g["extra"]["occ"]
    remove_stale(img_dir, FILE_PATTERN.format(split=split), names)
    write_json(out / f"id_hw_{split}.json", id_hw)
    ann_path = out / f"annotation_{split}.odgt"
    write_lines_json(ann_path, records)  # last: an interrupted run leaves no complete-looking annotation file
    return ann_path, stats


def generate_crowdhuman(out: str | Path, seed: int = 0, num_train: int = 300, num_val: int = 80,
                        image_size: int = 160) -> GeneratedDataset:
    """Write the synthetic CrowdHuman-format train and val splits under ``out`` and return where they are."""
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64 (got {image_size}): people would be a few pixels tall")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1 (got {num_train}, {num_val})")
    out = Path(out)
    start = time.perf_counter()
    result = GeneratedDataset(root=out, annotations={}, images={})
    for split, n in zip(SPLITS, (num_train, num_val)):
        ann, stats = generate_split(out, split, n, seed, image_size)
        result.annotations[split] = ann
        result.images[split] = out / "Images"
        result.stats[split] = stats
    result.seconds = time.perf_counter() - start
    return result
