"""Annotation validation on load: COCO json and CrowdHuman .odgt.

Errors are :class:`AnnotationError` (a ``ValueError``) whose message names the file and the first offending record
(annotation id / image id for COCO, line number and ID for .odgt) and says how many more records share the
problem. Checks run as numpy operations over whole columns, so real COCO (118k images, 860k annotations) costs
about as much as parsing its JSON; Python only walks records to find *which* one is bad once a check has failed.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pgd.errors import UserError

TOLERANCE = 1.0  # pixels a box may poke past the image border (annotation tools round outward)
ODGT_TAGS = ("person", "mask")


class AnnotationError(UserError, ValueError):
    """A dataset annotation file is malformed; the message names the file and the record."""


class AnnotationWarning(UserWarning):
    """A tolerated defect (``zero_size='warn'``), named like an :class:`AnnotationError`."""


ZERO_SIZE_POLICIES = ("error", "warn")


def _more(count: int, what: str) -> str:
    return f" (and {count - 1} more {what} with the same problem)" if count > 1 else ""


def _load_json(path: Path):
    try:
        text = path.read_text()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read annotation file: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: unreadable JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def _column(records: list, key: str, path: Path, kind: str, dtype=np.float64, width: int | None = None) -> np.ndarray:
    """``np.array([r[key] for r in records])`` with an error naming the first record that lacks a usable value."""
    if not records:
        return np.zeros((0, width) if width else (0,), dtype=dtype)
    try:
        values = np.array([r[key] for r in records], dtype=dtype)
        if width is not None and values.shape != (len(records), width):
            raise ValueError
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError
        return values
    except (KeyError, TypeError, ValueError):
        pass
    for i, r in enumerate(records):  # error path only: find the culprit
        name = _record_name(r, i, kind)
        if not isinstance(r, dict) or key not in r:
            raise AnnotationError(f"{path}: {name}: missing field {key!r}")
        try:
            v = np.array(r[key], dtype=dtype)
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: {name}: field {key!r} = {r[key]!r} is not numeric") from None
        if width is not None and v.shape != (width,):
            raise AnnotationError(f"{path}: {name}: field {key!r} = {r[key]!r} must have {width} numbers")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise AnnotationError(f"{path}: {name}: field {key!r} = {r[key]!r} is not finite")
    raise AnnotationError(f"{path}: field {key!r} of the {kind}s cannot be read as numbers")


def _record_name(r, index: int, kind: str) -> str:
    if isinstance(r, dict) and "id" in r:
        extra = f", image id {r['image_id']}" if kind == "annotation" and "image_id" in r else ""
        return f"{kind} id {r['id']} (#{index}{extra})"
    return f"{kind} #{index}"


def _check_unique(ids: np.ndarray, path: Path, kind: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    dup = values[counts > 1]
    if dup.size:
        where = np.flatnonzero(ids == dup[0])
        raise AnnotationError(f"{path}: duplicate {kind} id {dup[0]} (records #{', #'.join(map(str, where))})"
                              + _more(dup.size, f"duplicated {kind} ids"))


def _first(bad: np.ndarray, path: Path, describe, what: str) -> None:
    """Raise naming the first True row of ``bad`` with ``describe(i)``."""
    idx = np.flatnonzero(bad)
    if idx.size:
        raise AnnotationError(f"{path}: {describe(int(idx[0]))}" + _more(idx.size, what))


def _sizes(w: np.ndarray, h: np.ndarray, must: np.ndarray, path: Path, describe, what: str,
           zero_size: str) -> None:
    """Negative width/height is always an error; zero is one unless ``zero_size='warn'``.

    Real data has a few zero-size boxes (COCO train2017: annotations 918 and 2206849 have height 0; mmdet's
    CocoDataset skips boxes under 1 px), so a run on real data may choose to tolerate them explicitly.
    """
    _first(must & ((w < 0) | (h < 0)), path, lambda i: describe(i) + " has negative width/height", what)
    zero = must & ((w == 0) | (h == 0))
    if zero_size == "error":
        _first(zero, path, lambda i: describe(i) + " has zero width/height (pass zero_size='warn' to tolerate "
               "such boxes)", what)
    elif zero.any():
        idx = np.flatnonzero(zero)
        warnings.warn(f"{path}: {describe(int(idx[0]))} has zero width/height" + _more(idx.size, what),
                      AnnotationWarning, stacklevel=3)


def _check_policy(zero_size: str) -> None:
    if zero_size not in ZERO_SIZE_POLICIES:
        raise ValueError(f"zero_size must be one of {ZERO_SIZE_POLICIES}, got {zero_size!r}")


def _lookup(keys: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each key in ``table`` (unique values) and whether it is there, via one sort."""
    order = np.argsort(table, kind="stable")
    pos = np.searchsorted(table, keys, sorter=order)
    pos = np.clip(pos, 0, max(len(table) - 1, 0))
    if len(table) == 0:
        return pos, np.zeros(len(keys), dtype=bool)
    idx = order[pos]
    return idx, table[idx] == keys


def _missing_files(img_dir: Path, names: list[str]) -> np.ndarray:
    """Boolean mask of ``names`` (relative paths) that are not files under ``img_dir``; one directory scan."""
    if not img_dir.is_dir():
        raise AnnotationError(f"{img_dir}: image directory does not exist")
    present = {e.name for e in os.scandir(img_dir) if e.is_file()}
    return np.array([n not in present if "/" not in n else not (img_dir / n).is_file() for n in names], dtype=bool)


def validate_coco(json_path: str | Path, img_dir: str | Path | None = None, *, tolerance: float = TOLERANCE,
                  check_image_sizes: bool = False, zero_size: str = "error") -> dict:
    """Validate a COCO detection annotation file and return its parsed content.

    Checks: readable JSON with ``images`` / ``annotations`` / ``categories`` lists; unique image, annotation and
    category ids; positive image sizes; every annotation has a finite 4-number ``bbox`` with positive width and
    height (zero only warns with ``zero_size='warn'``) lying inside its image (``tolerance`` px), a known
    ``image_id`` and a known ``category_id``.
    With ``img_dir``: every ``file_name`` exists there; with ``check_image_sizes`` also that each file's pixel size
    (read from its header) matches ``width`` / ``height``.
    """
    _check_policy(zero_size)
    path = Path(json_path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{path}: missing or non-list field {key!r}")
    images, anns, cats = data["images"], data["annotations"], data["categories"]

    img_ids = _column(images, "id", path, "image", dtype=np.int64)
    widths = _column(images, "width", path, "image")
    heights = _column(images, "height", path, "image")
    _check_unique(img_ids, path, "image")
    _first((widths <= 0) | (heights <= 0), path,
           lambda i: f"image id {img_ids[i]}: non-positive size {widths[i]:g}x{heights[i]:g}", "images")
    cat_ids = _column(cats, "id", path, "category", dtype=np.int64)
    _check_unique(cat_ids, path, "category")

    ann_ids = _column(anns, "id", path, "annotation", dtype=np.int64)
    _check_unique(ann_ids, path, "annotation")
    ann_img = _column(anns, "image_id", path, "annotation", dtype=np.int64)
    ann_cat = _column(anns, "category_id", path, "annotation", dtype=np.int64)
    boxes = _column(anns, "bbox", path, "annotation", width=4).reshape(-1, 4)

    def ann(i: int) -> str:
        return f"annotation id {ann_ids[i]} (image id {ann_img[i]}): "

    x, y, w, h = boxes.T
    _sizes(w, h, np.ones(len(anns), bool), path, lambda i: ann(i) + f"bbox {anns[i]['bbox']}", "annotations",
           zero_size)
    _, known_cat = _lookup(ann_cat, cat_ids)
    _first(~known_cat, path, lambda i: ann(i) + f"unknown category id {ann_cat[i]} "
           f"(categories: {sorted(cat_ids.tolist())[:20]})", "annotations")
    which, known_img = _lookup(ann_img, img_ids)
    _first(~known_img, path, lambda i: f"annotation id {ann_ids[i]}: unknown image id {ann_img[i]}",
           "annotations")
    W, H = widths[which], heights[which]
    outside = (x < -tolerance) | (y < -tolerance) | (x + w > W + tolerance) | (y + h > H + tolerance)
    _first(outside, path, lambda i: ann(i) + f"bbox {anns[i]['bbox']} lies outside the {W[i]:g}x{H[i]:g} "
           f"image by more than {tolerance:g} px", "annotations")

    if img_dir is not None:
        img_dir = Path(img_dir)
        names = [im.get("file_name") for im in images]
        bad_name = np.array([not isinstance(n, str) or not n for n in names], dtype=bool)
        _first(bad_name, path, lambda i: f"image id {img_ids[i]}: missing or empty 'file_name'", "images")
        missing = _missing_files(img_dir, names)
        _first(missing, path, lambda i: f"image id {img_ids[i]}: image file {names[i]!r} not found in {img_dir}",
               "images")
        if check_image_sizes:
            sizes = np.array([Image.open(img_dir / n).size for n in names], dtype=np.float64).reshape(-1, 2)
            wrong = (sizes[:, 0] != widths) | (sizes[:, 1] != heights)
            _first(wrong, path, lambda i: f"image id {img_ids[i]}: file {names[i]!r} is "
                   f"{sizes[i, 0]:g}x{sizes[i, 1]:g} but the annotation says {widths[i]:g}x{heights[i]:g}",
                   "images")
    return data


@dataclass
class OdgtIndex:
    """What a validated .odgt file holds: its IDs in file order and, when images were checked, their (h, w)."""
    ids: list[str]
    num_boxes: int
    sizes: dict[str, tuple[int, int]] | None = None


def _odgt_records(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read annotation file: {exc.strerror or exc}") from exc
    # mmdet splits text.strip() on newlines: a blank line inside the file would reach json.loads('') there.
    records = []
    for n, line in enumerate(text.strip().split("\n"), start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}: line {n}: unreadable JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(rec, dict) or not isinstance(rec.get("ID"), str) or not rec["ID"]:
            raise AnnotationError(f"{path}: line {n}: record needs a non-empty string 'ID'")
        if not isinstance(rec.get("gtboxes"), list):
            raise AnnotationError(f"{path}: line {n} (ID {rec['ID']}): missing or non-list 'gtboxes'")
        records.append((n, rec))
    if not text.strip():
        raise AnnotationError(f"{path}: file is empty")
    return records


def validate_odgt(path: str | Path, img_dir: str | Path | None = None, *, tolerance: float = TOLERANCE,
                  allow_empty: bool = False, zero_size: str = "error") -> OdgtIndex:
    """Validate a CrowdHuman .odgt file (the fields mmdet's CrowdHumanDataset and CrowdHumanMetric read).

    Checks: every line is a JSON record with a unique string ``ID`` and a ``gtboxes`` list (non-empty unless
    ``allow_empty``: CrowdHumanMetric cannot evaluate an image without boxes); every box has ``tag`` in
    ('person', 'mask') and finite 4-number ``fbox``, ``vbox`` and ``hbox``; ``fbox`` and ``vbox`` have positive
    width and height, and so does ``hbox`` for heads that are not ignored (zero only warns with
    ``zero_size='warn'``).
    With ``img_dir``: ``<ID>.jpg`` exists for every record; its size (read from the header) bounds ``vbox``
    (``tolerance`` px). ``fbox`` and ``hbox`` are amodal and, as in CrowdHuman itself, may extend past the border,
    but an ``fbox`` must overlap the image.
    """
    _check_policy(zero_size)
    path = Path(path)
    records = _odgt_records(path)
    ids = [rec["ID"] for _, rec in records]
    lines = np.array([n for n, _ in records], dtype=np.int64)
    uniq, counts = np.unique(np.array(ids, dtype=object).astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        where = [int(lines[i]) for i, v in enumerate(ids) if v == dup]
        raise AnnotationError(f"{path}: duplicate ID {dup} on lines {where}" + _more(int((counts > 1).sum()), "IDs"))

    per_rec = np.array([len(rec["gtboxes"]) for _, rec in records], dtype=np.int64)
    if not allow_empty:
        _first(per_rec == 0, path, lambda i: f"line {lines[i]} (ID {ids[i]}): empty 'gtboxes' (CrowdHumanMetric "
               "cannot evaluate an image without boxes)", "records")
    boxes = [g for _, rec in records for g in rec["gtboxes"]]
    owner = np.repeat(np.arange(len(records)), per_rec)
    slot = np.arange(len(boxes)) - np.repeat(np.cumsum(per_rec) - per_rec, per_rec)

    def where(b: int) -> str:
        r = owner[b]
        return f"line {lines[r]} (ID {ids[r]}), gtboxes[{slot[b]}]"

    for b, g in enumerate(boxes):  # cheap structural pass; per-box values are checked vectorised below
        if not isinstance(g, dict):
            raise AnnotationError(f"{path}: {where(b)}: box entry must be an object")
    tags = np.array([g.get("tag") for g in boxes], dtype=object)
    _first(~np.isin(tags, ODGT_TAGS), path,
           lambda b: f"{where(b)}: unknown tag {tags[b]!r} (expected one of {ODGT_TAGS})", "boxes")
    cols = {}
    for key in ("fbox", "vbox", "hbox"):
        try:
            cols[key] = _column(boxes, key, path, "box", width=4).reshape(-1, 4)
        except AnnotationError as exc:  # re-point the message at line / ID / slot
            bad = next(b for b, g in enumerate(boxes) if not _is_box(g.get(key)))
            raise AnnotationError(f"{path}: {where(bad)}: field {key!r} = {boxes[bad].get(key)!r} must be 4 "
                                  "finite numbers") from exc
    ignored = np.array([_flag(g.get("extra"), "ignore") for g in boxes], dtype=bool) | (tags != "person")
    head_ignored = ignored | np.array([_flag(g.get("head_attr"), "ignore") for g in boxes], dtype=bool)
    for key, must in (("fbox", np.ones(len(boxes), bool)), ("vbox", np.ones(len(boxes), bool)),
                      ("hbox", ~head_ignored)):
        c = cols[key]
        _sizes(c[:, 2], c[:, 3], must, path, lambda b, key=key: f"{where(b)}: {key} {boxes[b][key]}", "boxes",
               zero_size)

    sizes = None
    if img_dir is not None:
        img_dir = Path(img_dir)
        names = [f"{i}.jpg" for i in ids]
        missing = _missing_files(img_dir, names)
        _first(missing, path, lambda i: f"line {lines[i]} (ID {ids[i]}): image file {names[i]!r} not found in "
               f"{img_dir}", "records")
        wh = np.array([Image.open(img_dir / n).size for n in names], dtype=np.float64).reshape(-1, 2)
        sizes = {i: (int(h), int(w)) for i, (w, h) in zip(ids, wh)}
        W, H = wh[owner, 0], wh[owner, 1]
        v, f = cols["vbox"], cols["fbox"]
        _first((v[:, 0] < -tolerance) | (v[:, 1] < -tolerance) | (v[:, 0] + v[:, 2] > W + tolerance)
               | (v[:, 1] + v[:, 3] > H + tolerance), path,
               lambda b: f"{where(b)}: vbox {boxes[b]['vbox']} lies outside the {W[b]:g}x{H[b]:g} image by more "
               f"than {tolerance:g} px", "boxes")
        _first((f[:, 0] >= W) | (f[:, 1] >= H) | (f[:, 0] + f[:, 2] <= 0) | (f[:, 1] + f[:, 3] <= 0), path,
               lambda b: f"{where(b)}: fbox {boxes[b]['fbox']} lies entirely outside the {W[b]:g}x{H[b]:g} image",
               "boxes")
    return OdgtIndex(ids=ids, num_boxes=len(boxes), sizes=sizes)


def _is_box(v) -> bool:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == (4,) and bool(np.isfinite(a).all())


def _flag(d, key: str) -> bool:
    return isinstance(d, dict) and bool(d.get(key, 0))
