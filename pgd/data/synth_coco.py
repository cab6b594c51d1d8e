"""Synthetic COCO-format detection set: textured shapes at COCO's three scales, with occlusion and clutter.

Layout written under ``out``::

    annotations/instances_train.json   annotations/instances_val.json
    images/train/000001.png ...        images/val/000001.png ...

Conventions (also in the report and ARCHITECTURE.md):

* ``bbox`` is the tight box of the object's *full* rasterised mask (amodal: objects drawn later may hide part of
  it), in COCO pixel-edge coordinates ``[x, y, w, h]``; objects are never truncated by the image border.
* ``area`` is the **box area** ``w * h``. pycocotools buckets ground truth by ``area`` and detections by their box
  area, so box area keeps APs/APm/APl consistent between the two and independent of the shape class.
* Sizes are drawn per bucket (small < 32^2 <= medium < 96^2 <= large, COCO's absolute thresholds) so that all three
  buckets are populated at the default 128 px image size; large objects need image_size >= 112.
* Every 20th image (index % 20 == 19) has no objects, only background clutter (5 %).
* Occlusion: an object is only placed if every object under it keeps >= ``style.min_visible`` of its pixels.
* ``style`` ('easy', the default, or 'hard', see :data:`STYLES`) sets texture, clutter, contrast and size mix.
* Each image has its own random stream ``default_rng([seed, 0, split, index])``: images do not depend on how
  many others are generated, and the same seed gives byte-identical files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import render
from .io import remove_stale, write_json, write_png

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
CATEGORIES: list[dict] = [dict(id=i + 1, name=n, supercategory="shape") for i, n in enumerate(CLASSES)]
SPLITS = ("train", "val")
EMPTY_EVERY = 20
FILE_PATTERN = r"\d{6}\.png"


@dataclass(frozen=True)
class CocoStyle:
    """How hard the images are. ``buckets``: name -> (probability, min side, max side) of the target box side
    sqrt(w * h), kept clear of the 32 / 96 thresholds so rasterisation (+-1 px) cannot move an object across a
    COCO scale-bucket boundary."""
    buckets: tuple[tuple[str, float, float, float], ...]
    max_objects: int
    min_visible: float        # an object is only placed if everything under it keeps this fraction visible
    contrast_prob: float      # object brightness on the far side of the background's
    texture_prob: float       # striped / checkered / speckled fill instead of a solid one
    shaded_texture: float     # probability that the second texture colour is a shade of the first
    clutter: tuple[int, int]  # distractors drawn under the objects: integers(lo, hi)
    clutter_over_prob: float  # probability of one distractor drawn over the objects
    blotch: tuple[float, float]
    pattern_prob: float
    pattern_blend: float
    sensor_noise: float


STYLES: dict[str, CocoStyle] = {
    # Default, sized for the mini profile: detectors trained from scratch for a few hundred CPU iterations must
    # reach useful AP, so shapes keep clean silhouettes (textures are shades of one colour), objects contrast
    # with the background, and tiny objects, clutter and heavy occlusion are rare. Measured (ATSS R50, 100 it,
    # mini recipe, 100 val images): 5.6 AP here against 4.1 for the previous default (25 % small objects,
    # up to 4 objects, 50 % textured, min_visible 0.6) and 3.0 at 300 it for up to 8 objects per image (denser
    # scenes are harder, not more informative per iteration); docs/mini-profile.md has the whole sweep.
    "easy": CocoStyle(buckets=(("small", 0.12, 14.0, 29.0), ("medium", 0.53, 35.0, 92.0),
                               ("large", 0.35, 100.0, 115.0)),
                      max_objects=3, min_visible=0.8, contrast_prob=1.0, texture_prob=0.3, shaded_texture=1.0,
                      clutter=(0, 2), clutter_over_prob=0.1, blotch=(5.0, 15.0), pattern_prob=0.2,
                      pattern_blend=0.15, sensor_noise=2.0),
    # Harder variant: two-colour textures that break silhouettes, more tiny objects, more clutter and occlusion.
    "hard": CocoStyle(buckets=(("small", 0.35, 10.0, 29.0), ("medium", 0.40, 35.0, 92.0),
                               ("large", 0.25, 100.0, 115.0)),
                      max_objects=5, min_visible=0.5, contrast_prob=0.95, texture_prob=0.75, shaded_texture=0.5,
                      clutter=(1, 6), clutter_over_prob=0.3, blotch=(5.0, 25.0), pattern_prob=0.5,
                      pattern_blend=0.2, sensor_noise=2.0),
}


@dataclass
class GeneratedDataset:
    """What a generator wrote: the root, per-split annotation files and image folders, and summary counts."""
    root: Path
    annotations: dict[str, Path]
    images: dict[str, Path]
    stats: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


def _unit_shape(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline (and hole) of a category in unit coordinates centred on the origin."""
    def circle(r: float, n: int = 48) -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)

    if name == "circle":
        return circle(1.0), None
    if name == "ring":
        return circle(1.0), circle(0.55)
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float), None
    if name == "triangle":
        t = np.deg2rad([90.0, 210.0, 330.0])
        return np.stack([np.cos(t), -np.sin(t)], axis=1), None
    if name == "star":
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), -r * np.sin(t)], axis=1), None
    if name == "cross":
        a, b = 1.0, 0.33
        return np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b],
                         [-a, b], [-a, -b], [-b, -b]], dtype=float), None
    raise ValueError(f"unknown shape {name!r}")


def _bucket_table(style: CocoStyle, image_size: int) -> list[tuple[str, float, float, float]]:
    """Buckets reachable at this image size, with their target side range clipped to fit the image."""
    limit = 0.9 * image_size
    return [(name, p, lo, min(hi, limit)) for name, p, lo, hi in style.buckets if min(hi, limit) > lo]


def _place(rng: np.random.Generator, name: str, side: float, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly rotated, stretched and positioned outline whose bounding box has area ~ side^2, inside the image."""
    outline, hole = _unit_shape(name)
    aspect = np.exp(rng.uniform(np.log(0.92), np.log(1.08)) if name == "square"
                    else rng.uniform(np.log(0.8), np.log(1.25)))
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    stretch = np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    outline = (outline * stretch) @ rot.T
    ext = outline.max(0) - outline.min(0)
    scale = side / np.sqrt(ext[0] * ext[1])
    extent = ext * scale
    if extent.max() > size - 3:
        return None, None
    origin = rng.uniform(1.0, size - 1.0 - extent) - outline.min(0) * scale
    outline = outline * scale + origin
    if hole is not None:
        hole = ((hole * stretch) @ rot.T) * scale + origin
    return outline, hole


def _object_fill(rng: np.random.Generator, style: CocoStyle, dark_background: bool, shape) -> np.ndarray:
    # Mostly contrasting with the background, sometimes not: shape, not brightness, must identify an object.
    value = ((0.55, 1.0) if dark_background else (0.12, 0.5)) if rng.random() < style.contrast_prob else (0.12, 1.0)
    c1 = render.random_colour(rng, value=value, sat=(0.35, 1.0))
    if rng.random() >= style.texture_prob:
        return c1
    c2 = (c1 * rng.uniform(0.6, 0.85) if rng.random() < style.shaded_texture
          else render.random_colour(rng, value=value, sat=(0.2, 1.0)))
    return render.texture(rng, shape, c1, c2, kinds=("stripes", "checker", "noise"))


def backdrop(rng: np.random.Generator, size: int, style: CocoStyle = STYLES["easy"]) -> tuple[np.ndarray, bool]:
    """(float image, dark?): the set's background, dark or light, with its distractors drawn on it."""
    dark = rng.random() < 0.5
    img = render.background(rng, (size, size), value=(0.08, 0.4) if dark else (0.6, 0.92), blotch=style.blotch,
                            pattern_prob=style.pattern_prob, pattern_blend=style.pattern_blend)
    render.clutter(rng, img, int(rng.integers(*style.clutter)))
    return img, dark


def render_image(rng: np.random.Generator, size: int, empty: bool,
                 style: CocoStyle = STYLES["easy"]) -> tuple[np.ndarray, list[dict]]:
    """One image and its objects as dicts (category_id, bbox [x, y, w, h], visible fraction)."""
    shape = (size, size)
    img, dark = backdrop(rng, size, style)

    objects: list[dict] = []
    if not empty:
        table = _bucket_table(style, size)
        probs = np.array([t[1] for t in table])
        n = int(rng.integers(1, style.max_objects + 1))
        picks = rng.choice(len(table), size=n, p=probs / probs.sum())
        sides = np.array([np.exp(rng.uniform(np.log(table[k][2]), np.log(table[k][3]))) for k in picks])
        owner = np.full(shape, -1, dtype=np.int32)
        full_area: list[int] = []
        for side in np.sort(sides)[::-1]:  # large first: small ones then find room on top of them
            cat = int(rng.integers(len(CLASSES)))
            for _attempt in range(30):
                outline, hole = _place(rng, CLASSES[cat], side, size)
                if outline is None:
                    side *= 0.9
                    continue
                mask = render.polygon_mask(shape, [outline], [] if hole is None else [hole])
                if mask.sum() < 16:
                    continue
                k = len(full_area)
                visible = np.bincount(owner[~mask & (owner >= 0)], minlength=k)[:k]
                if k and (visible / np.asarray(full_area) < style.min_visible).any():
                    continue
                render.paint(img, mask, _object_fill(rng, style, dark, shape))
                owner[mask] = k
                full_area.append(int(mask.sum()))
                objects.append(dict(category_id=cat + 1, bbox=render.tight_box(mask)))
                break
        counts = np.bincount(owner[owner >= 0], minlength=len(full_area))
        for obj, vis, full in zip(objects, counts, full_area):
            obj["visible"] = float(vis) / full
    if rng.random() < style.clutter_over_prob:  # a distractor over the objects too
        render.clutter(rng, img, 1)
    return render.finish(img, rng, sensor_noise=style.sensor_noise), objects


def _bucket_of(area: float) -> str:
    return "small" if area < 32**2 else ("medium" if area < 96**2 else "large")


def generate_split(out: Path, split: str, num_images: int, seed: int, image_size: int,
                   style: str = "easy") -> tuple[Path, dict]:
    img_dir = out / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    split_code = SPLITS.index(split)
    images, annotations = [], []
    stats = dict(images=num_images, annotations=0, empty_images=0, occluded=0,
                 buckets=dict(small=0, medium=0, large=0), categories={c: 0 for c in CLASSES})
    names = set()
    for index in range(num_images):
        rng = np.random.default_rng([seed, 0, split_code, index])
        pixels, objects = render_image(rng, image_size, empty=index % EMPTY_EVERY == EMPTY_EVERY - 1,
                                       style=STYLES[style])
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        names.add(file_name)
        write_png(img_dir / file_name, pixels)
        images.append(dict(id=image_id, file_name=file_name, width=image_size, height=image_size))
        stats["empty_images"] += not objects
        for obj in objects:
            x, y, w, h = obj["bbox"]
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=obj["category_id"],
                                    bbox=[float(x), float(y), float(w), float(h)], area=float(w * h),
                                    iscrowd=0))
            stats["buckets"][_bucket_of(w * h)] += 1
            stats["categories"][CLASSES[obj["category_id"] - 1]] += 1
            stats["occluded"] += obj["visible"] < 0.999
    stats["annotations"] = len(annotations)
    remove_stale(img_dir, FILE_PATTERN, names)
    ann_path = out / "annotations" / f"instances_{split}.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    info = dict(description=f"PGD synthetic shapes, {split} split", version="1",
                generator=dict(seed=seed, image_size=image_size, num_images=num_images, style=style))
    # The annotation file is written last, so an interrupted run leaves no file that looks complete.
    write_json(ann_path, dict(info=info, licenses=[], images=images, annotations=annotations,
                              categories=CATEGORIES))
    return ann_path, stats


def generate_coco(out: str | Path, seed: int = 0, num_train: int = 400, num_val: int = 100,
                  image_size: int = 128, style: str = "easy") -> GeneratedDataset:
    """Write the synthetic COCO-format train and val splits under ``out`` and return where they are.

    ``style`` picks a preset of :data:`STYLES` ('easy' for the mini profile, 'hard')."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {sorted(STYLES)}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64 (got {image_size}): smaller images leave no medium objects")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1 (got {num_train}, {num_val})")
    out = Path(out)
    start = time.perf_counter()
    result = GeneratedDataset(root=out, annotations={}, images={})
    for split, n in zip(SPLITS, (num_train, num_val)):
        ann, stats = generate_split(out, split, n, seed, image_size, style)
        result.annotations[split] = ann
        result.images[split] = out / "images" / split
        result.stats[split] = stats
    result.seconds = time.perf_counter() - start
    return result
