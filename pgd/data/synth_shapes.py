"""Synthetic *classification* images: the mini profile's stand-in for ImageNet pretraining.

The paper initialises every backbone from ImageNet, which covers the objects of both its datasets; offline there
are no such weights. The mini profile instead pretrains each backbone once on object-centric images of what its
two detection sets hold: the six shape classes of the COCO-format set, drawn by that set's renderer (colours,
shaded textures, clutter, sensor noise) with one object per image, and a seventh class, the crowd set's person
figure (:func:`pgd.data.synth_crowdhuman.render_person_example`), on a street or on the shape set's backgrounds,
sometimes with neighbours overlapping it. Without it the crowd teacher's backbone had never seen a person: with
the lr 5e-3 pretraining recipe the CrowdHuman DDOD teacher fell to MR 87.5 / AP 44.0 while the COCO teachers
gained (docs/mini-profile.md).

Images are rendered on the fly from ``default_rng([seed, 2, index])``: deterministic per index, no files, and a
different stream from the detection sets' train (split code 0) and val (1) images. The label is the image's class:
0..5 the shapes in :data:`pgd.data.synth_coco.CLASSES` order, 6 (:data:`PERSON`) the person.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .synth_coco import CLASSES, STYLES, backdrop, render_image
from .synth_crowdhuman import render_person_example

# RGB normalisation of the detectors' DetDataPreprocessor (configs/_base_/models): pretraining must feed the
# backbone what detection will feed it.
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
STREAM = 2  # rng stream code: 0 and 1 are the detection set's train / val splits
CLASS_NAMES = (*CLASSES, "person")
PERSON = len(CLASSES)
NUM_CLASSES = len(CLASS_NAMES)
STREET_PROB = 0.5  # a person on the crowd set's street, else on the shape set's backgrounds


def classification_style(image_size: int):
    """The detection set's default look with exactly one object filling 30-85 % of the image side."""
    lo, hi = 0.3 * image_size, 0.85 * image_size
    return dataclasses.replace(STYLES["easy"], buckets=(("object", 1.0, lo, hi),), max_objects=1)


def render_example(seed: int, index: int, image_size: int = 64, person: bool = True) -> tuple[np.ndarray, int]:
    """(uint8 HxWx3 RGB image, class index in 0..6) of example ``index``; the classes are equally likely.

    ``person=False``: the six shapes only (0..5), the images the pretraining used before the person class (same
    bytes).
    """
    rng = np.random.default_rng([seed, STREAM, index])
    style = classification_style(image_size)
    if person and rng.random() < 1 / NUM_CLASSES:
        back = None if rng.random() < STREET_PROB else backdrop(rng, image_size, style)[0]
        return render_person_example(rng, image_size, back), PERSON
    for _ in range(8):  # the renderer may fail to place a shape; redraw (still deterministic)
        img, objects = render_image(rng, image_size, empty=False, style=style)
        if objects:
            return img, objects[0]["category_id"] - 1
    raise RuntimeError(f"could not place a shape in example {index} (image_size={image_size})")


def render_batch(seed: int, indices, image_size: int = 64, person: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 N x 3 x H x W images and int64 labels for ``indices``."""
    images, labels = zip(*(render_example(seed, int(i), image_size, person) for i in indices))
    x = (np.stack(images).astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.asarray(labels, dtype=np.int64)

