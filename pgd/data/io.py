"""Byte-deterministic writers: same array / object in, same bytes out (no timestamps, fixed encoder settings)."""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from pgd.atomic import atomic_write_bytes

# Fixed encoder parameters: PIL writes no tIME/EXIF chunk unless asked, and these pin every other choice.
PNG_PARAMS = dict(format="PNG", compress_level=6, optimize=False)
JPEG_PARAMS = dict(format="JPEG", quality=95, subsampling=0, optimize=False, progressive=False)


def _encode(img: np.ndarray, params: dict) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, **params)
    return buf.getvalue()


def write_png(path: Path, img: np.ndarray) -> None:
    """Atomic: a reader (or a concurrent regeneration) never sees a half-written image."""
    atomic_write_bytes(path, _encode(img, PNG_PARAMS), fsync=False)


def write_jpeg(path: Path, img: np.ndarray) -> None:
    atomic_write_bytes(path, _encode(img, JPEG_PARAMS), fsync=False)


def write_json(path: Path, obj) -> None:
    """Compact JSON in the insertion order of ``obj`` (the generators build dicts in a fixed order)."""
    atomic_write_bytes(path, json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n", fsync=False)


def write_lines_json(path: Path, records: list) -> None:
    """One JSON object per line (CrowdHuman's .odgt)."""
    text = "".join(json.dumps(r, separators=(", ", ": "), ensure_ascii=True) + "\n" for r in records)
    atomic_write_bytes(path, text.encode(), fsync=False)


def remove_stale(directory: Path, pattern: str, keep: set[str]) -> int:
    """Delete files in ``directory`` whose name fully matches ``pattern`` but is not in ``keep``.

    A regeneration with fewer images must not leave the previous run's extra images behind, and only files
    that this generator's own naming scheme could have produced are touched.
    """
    regex = re.compile(pattern)
    removed = 0
    for entry in os.scandir(directory):
        if entry.is_file() and regex.fullmatch(entry.name) and entry.name not in keep:
            os.remove(entry.path)
            removed += 1
    return removed
