"""Synthetic shape *classification* images: the mini profile's stand-in for ImageNet pretraining.

The paper initialises every backbone from ImageNet; offline there are no such weights. The mini profile instead
pretrains each backbone once on object-centric images of the same six shape classes the detection set uses,
drawn by the same renderer (colours, shaded textures, clutter, sensor noise): one object per image, so the label
is the image's class. Images are rendered on the fly from ``default_rng([seed, 2, index])``: deterministic per
index, no files, and a different stream from the detection set's train (split code 0) and val (1) images.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .synth_coco import CLASSES, STYLES, render_image

# RGB normalisation of the detectors' DetDataPreprocessor (configs/_base_/models): pretraining must feed the
# backbone what detection will feed it.
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
STREAM = 2  # rng stream code: 0 and 1 are the detection set's train / val splits


def classification_style(image_size: int):
    """The detection set's default look with exactly one object filling 30-85 % of the image side."""
    lo, hi = 0.3 * image_size, 0.85 * image_size
    return dataclasses.replace(STYLES["easy"], buckets=(("object", 1.0, lo, hi),), max_objects=1)


def render_example(seed: int, index: int, image_size: int = 64) -> tuple[np.ndarray, int]:
    """(uint8 HxWx3 RGB image, class index in 0..5) of example ``index``."""
    rng = np.random.default_rng([seed, STREAM, index])
    style = classification_style(image_size)
    for _ in range(8):  # the renderer may fail to place a shape; redraw (still deterministic)
        img, objects = render_image(rng, image_size, empty=False, style=style)
        if objects:
            return img, objects[0]["category_id"] - 1
    raise RuntimeError(f"could not place a shape in example {index} (image_size={image_size})")


def render_batch(seed: int, indices, image_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 N x 3 x H x W images and int64 labels for ``indices``."""
    images, labels = zip(*(render_example(seed, int(i), image_size) for i in indices))
    x = (np.stack(images).astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.asarray(labels, dtype=np.int64)


NUM_CLASSES = len(CLASSES)
