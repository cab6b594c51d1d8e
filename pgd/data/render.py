"""Raster helpers shared by the synthetic generators: masks, textures, colours, backgrounds, clutter.

Everything is driven by an explicit ``numpy.random.Generator`` and drawn with PIL/numpy only, so the same
generator state always yields the same pixels.
"""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw


def polygon_mask(shape: tuple[int, int], polygons: list[np.ndarray], holes: list[np.ndarray] = ()) -> np.ndarray:
    """Boolean (H, W) mask of the union of ``polygons`` minus ``holes`` (each an (K, 2) array of x, y)."""
    h, w = shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        draw.polygon([tuple(p) for p in np.asarray(poly, dtype=float).tolist()], fill=1)
    for poly in holes:
        draw.polygon([tuple(p) for p in np.asarray(poly, dtype=float).tolist()], fill=0)
    return np.asarray(canvas, dtype=bool)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Pixel-edge box (x, y, w, h) of the True pixels: pixel i covers [i, i + 1)."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def random_colour(rng: np.random.Generator, value: tuple[float, float], sat: tuple[float, float]) -> np.ndarray:
    return hsv(rng.random(), rng.uniform(*sat), rng.uniform(*value))


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return xs, ys


def texture(rng: np.random.Generator, shape: tuple[int, int], c1: np.ndarray, c2: np.ndarray,
            kinds: tuple[str, ...] = ("solid", "stripes", "checker", "noise")) -> np.ndarray:
    """(H, W, 3) float32 fill pattern in two colours: solid, oriented stripes, rotated checker or speckle noise."""
    kind = kinds[rng.integers(len(kinds))]
    h, w = shape
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    xs, ys = _grid(shape)
    theta = rng.uniform(0, np.pi)
    u = xs * np.cos(theta) + ys * np.sin(theta)
    v = -xs * np.sin(theta) + ys * np.cos(theta)
    if kind == "stripes":
        period = rng.uniform(3.0, 8.0)
        sel = (np.floor(u / period * 2.0) % 2).astype(bool)
    elif kind == "checker":
        period = rng.uniform(3.0, 7.0)
        sel = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(bool)
    elif kind == "noise":
        sel = rng.random(shape) < rng.uniform(0.2, 0.5)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return np.where(sel[..., None], c2, c1).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32 low-frequency noise in [-1, 1]: a cells x cells random grid, bilinearly upsampled."""
    coarse = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
    up = Image.fromarray(coarse, "L").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(up, dtype=np.float32) / 127.5 - 1.0


def background(rng: np.random.Generator, shape: tuple[int, int], value: tuple[float, float],
               blotch: tuple[float, float] = (5.0, 25.0), pattern_prob: float = 0.5,
               pattern_blend: float = 0.2) -> np.ndarray:
    """Textured, low-saturation background: base colour + linear gradient + blotches + optional faint pattern."""
    h, w = shape
    base = random_colour(rng, value=value, sat=(0.0, 0.35))
    xs, ys = _grid(shape)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (xs * np.cos(theta) + ys * np.sin(theta)) / max(h, w)
    img = base + (ramp * rng.uniform(-40, 40))[..., None]
    img = img + (smooth_noise(rng, shape, int(rng.integers(3, 9))) * rng.uniform(*blotch))[..., None]
    if rng.random() < pattern_prob:  # faint large-scale pattern: texture alone must not signal an object
        other = base + rng.uniform(-30, 30, size=3).astype(np.float32)
        pattern = texture(rng, shape, base, other, kinds=("stripes", "checker", "noise"))
        img = (1 - pattern_blend) * img + pattern_blend * pattern
    return img.astype(np.float32)


def paint(img: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> None:
    """Write ``fill`` (a colour or an (H, W, 3) texture) into ``img`` where ``mask`` holds, in place."""
    if fill.ndim == 1:
        img[mask] = fill
    else:
        img[mask] = fill[mask]


def line_mask(shape: tuple[int, int], points: np.ndarray, width: int) -> np.ndarray:
    h, w = shape
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in np.asarray(points, dtype=float).tolist()], fill=1, width=width)
    return np.asarray(canvas, dtype=bool)


def arc_mask(shape: tuple[int, int], box: tuple[float, float, float, float], start: float, end: float,
             width: int) -> np.ndarray:
    h, w = shape
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).arc(box, start, end, fill=1, width=width)
    return np.asarray(canvas, dtype=bool)


def clutter(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Non-object distractors drawn in place: thin lines, zig-zags, open arcs and specks.

    They are thin or tiny on purpose, so that no distractor looks like a filled object category.
    """
    h, w = img.shape[:2]
    for _ in range(count):
        colour = random_colour(rng, value=(0.1, 1.0), sat=(0.0, 1.0))
        kind = rng.integers(4)
        if kind == 0:
            pts = rng.uniform([0, 0], [w, h], size=(2, 2))
            mask = line_mask((h, w), pts, int(rng.integers(1, 3)))
        elif kind == 1:
            start = rng.uniform([0, 0], [w, h])
            steps = rng.normal(0, w / 8, size=(int(rng.integers(3, 7)), 2))
            mask = line_mask((h, w), np.vstack([start, start + np.cumsum(steps, axis=0)]), 1)
        elif kind == 2:
            cx, cy = rng.uniform([0, 0], [w, h])
            r = rng.uniform(5, w / 3)
            a0 = rng.uniform(0, 360)
            mask = arc_mask((h, w), (cx - r, cy - r, cx + r, cy + r), a0, a0 + rng.uniform(40, 200), 1)
        else:
            pts = rng.uniform([0, 0], [w, h], size=(int(rng.integers(3, 12)), 2))
            xs, ys = _grid((h, w))
            d2 = (xs[..., None] - pts[:, 0]) ** 2 + (ys[..., None] - pts[:, 1]) ** 2
            mask = (d2 <= rng.uniform(0.6, 2.5)).any(axis=-1)
        paint(img, mask, colour)


def finish(img: np.ndarray, rng: np.random.Generator, sensor_noise: float) -> np.ndarray:
    """Add per-pixel sensor noise and quantise to uint8."""
    noisy = img + rng.normal(0.0, sensor_noise, size=img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
