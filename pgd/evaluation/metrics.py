"""Glue between mmdet's evaluators and the run directory's ``metrics.json``.

mmdet's ``CocoMetric`` reports fractions rounded to 3 decimals under keys such as ``coco/bbox_mAP_50``;
``CrowdHumanMetric`` reports fractions under ``crowd_human/mAP``, ``crowd_human/mMR``, ``crowd_human/JI``.
``metrics.json`` (docs/ARCHITECTURE.md) holds the paper's names in percent, so tables read one format.
pycocotools reports -1 for a size range without any ground truth; that is "undefined", not a score, and is
written as JSON ``null``. A model without a single detection (early in a short mini run) gets AP 0 and MR 100:
mmdet returns no COCO numbers (:func:`empty_coco_record`) and a NaN MR (:func:`_no_detection_miss_rate`) then.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgd.atomic import atomic_write_text
from pgd.errors import UserError

# metrics.json key -> mmdet evaluator key (without the evaluator prefix), in the order of the paper's tables
COCO_KEYS: dict[str, str] = {
    "AP": "bbox_mAP",
    "AP50": "bbox_mAP_50",
    "AP75": "bbox_mAP_75",
    "APs": "bbox_mAP_s",
    "APm": "bbox_mAP_m",
    "APl": "bbox_mAP_l",
}
CROWDHUMAN_KEYS: dict[str, str] = {"MR": "mMR", "AP": "mAP", "JI": "JI"}
DATASET_KEYS: dict[str, dict[str, str]] = {"coco": COCO_KEYS, "crowdhuman": CROWDHUMAN_KEYS}
# optional: {"digest", "commit", "dirty"} of the training run (pgd.provenance), written by `pgd eval`
PROVENANCE_KEY = "provenance"


class MetricsError(UserError, ValueError):
    """Evaluator output or a metrics.json that does not match the contract."""


def _strip_prefix(metrics: Mapping[str, Any]) -> dict[str, Any]:
    # the evaluator prefixes each key with its metric's name ('coco/', 'crowd_human/'); two evaluators giving
    # the same bare key would be ambiguous, so refuse instead of silently keeping one
    bare: dict[str, Any] = {}
    for key, value in metrics.items():
        name = key.rsplit("/", 1)[-1]
        if name in bare:
            raise MetricsError(f"metric {name!r} reported twice (keys {sorted(metrics)}); use one evaluator")
        bare[name] = value
    return bare


def _percent(value: Any, key: str) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise MetricsError(f"metric {key!r} is not a number: {value!r}") from err
    if value < 0:  # pycocotools' -1: no ground truth in this area range
        return None
    if math.isnan(value) or value > 1.0 + 1e-9:
        raise MetricsError(f"metric {key!r} = {value!r} is not a fraction in [0, 1]")
    # mmdet rounds to 3 (COCO) or 4 (CrowdHuman) decimals; rounding again hides float noise from the x100
    return round(value * 100.0, 2)


def _no_detection_miss_rate(bare: dict[str, Any]) -> dict[str, Any]:
    """CrowdHumanMetric's MR is NaN when there is no detection at all (it averages over an empty FPPI curve).

    A detector that finds nothing misses every person at every false-positive rate: MR = 1 (100 %). Only that
    case is mapped (AP 0 says no detection matched); any other NaN stays an error.
    """
    mr, ap = bare.get("mMR"), bare.get("mAP")
    try:
        if mr is not None and math.isnan(float(mr)) and ap is not None and float(ap) == 0.0:
            return {**bare, "mMR": 1.0}
    except (TypeError, ValueError):
        pass
    return bare


def to_metrics_json(metrics: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Map an evaluator's result dict (``runner.test()``'s return) to the metrics.json record."""
    if dataset not in DATASET_KEYS:
        raise MetricsError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASET_KEYS)}")
    bare = _strip_prefix(metrics)
    if dataset == "crowdhuman":
        bare = _no_detection_miss_rate(bare)
    record: dict[str, Any] = {"dataset": dataset}
    for out_key, in_key in DATASET_KEYS[dataset].items():
        if in_key not in bare:
            raise MetricsError(
                f"{dataset} evaluation did not report {in_key!r} (needed for {out_key!r}); got {sorted(metrics)}")
        record[out_key] = _percent(bare[in_key], in_key)
    return record


# COCO's area ranges (pycocotools Params.areaRng): small < 32^2 <= medium < 96^2 <= large
_AREA_KEYS = (("APs", 0.0, 32.0 ** 2), ("APm", 32.0 ** 2, 96.0 ** 2), ("APl", 96.0 ** 2, float("inf")))


def empty_coco_record(ann_file: str | os.PathLike) -> dict[str, Any]:
    """The record for a model that detects nothing at all.

    mmdet's CocoMetric returns ``{}`` then (pycocotools cannot load an empty result list), yet the AP of such a
    model is 0 wherever there is ground truth; an area range without (non-crowd) ground truth stays undefined
    (null), as pycocotools' -1 would make it.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    anns = [a for a in json.loads(path.read_text()).get("annotations", []) if not a.get("iscrowd", 0)]
    if not anns:
        raise MetricsError(f"{path} has no non-crowd annotations: AP is undefined")
    record: dict[str, Any] = {"dataset": "coco", "AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    for key, lo, hi in _AREA_KEYS:
        record[key] = 0.0 if any(lo <= float(a["area"]) < hi for a in anns) else None
    return record


def infer_dataset(evaluator_cfg: Any) -> str:
    """'coco' or 'crowdhuman' from a test_evaluator config (a dict or a list of dicts)."""
    cfgs = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg]
    types = {c.get("type") for c in cfgs if isinstance(c, Mapping)}
    if "CrowdHumanMetric" in types:
        return "crowdhuman"
    if "CocoMetric" in types:
        return "coco"
    raise MetricsError(f"test_evaluator has no CocoMetric or CrowdHumanMetric (types: {sorted(map(str, types))})")


def write_metrics_json(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    validate_record(record, source=str(path))
    atomic_write_text(path, json.dumps(dict(record), indent=2) + "\n")


def validate_record(record: Mapping[str, Any], source: str = "metrics record") -> None:
    dataset = record.get("dataset")
    if dataset not in DATASET_KEYS:
        raise MetricsError(f"{source}: 'dataset' must be one of {sorted(DATASET_KEYS)}, got {dataset!r}")
    expected = {"dataset", *DATASET_KEYS[dataset]}
    if set(record) - {PROVENANCE_KEY} != expected:
        raise MetricsError(f"{source}: keys {sorted(record)} differ from the contract's {sorted(expected)} "
                           f"(+ optional {PROVENANCE_KEY!r})")
    prov = record.get(PROVENANCE_KEY)
    if prov is not None and not (isinstance(prov, Mapping) and isinstance(prov.get("digest"), str)):
        raise MetricsError(f"{source}: {PROVENANCE_KEY!r} must be a mapping with a 'digest' string, got {prov!r}")
    for key in DATASET_KEYS[dataset]:
        value = record[key]
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 100.0):
            raise MetricsError(f"{source}: {key} = {value!r} is not a percentage in [0, 100] or null")


def read_metrics_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MetricsError(f"{path}: not valid JSON ({err})") from err
    validate_record(record, source=str(path))
    return record
