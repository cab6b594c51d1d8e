"""pgd eval / pgd.evaluation.metrics: evaluator dicts -> metrics.json, atomic writes, errors on bad run dirs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_helpers import tiny_coco, tiny_run  # noqa: F401  (fixtures)

from pgd.evaluation import metrics as M

# what mmdet 3.3's CocoMetric returns through runner.test() (fractions rounded to 3 decimals, 'coco/' prefix)
COCO_RAW = {
    "coco/bbox_mAP": 0.536, "coco/bbox_mAP_50": 0.812, "coco/bbox_mAP_75": 0.604,
    "coco/bbox_mAP_s": 0.201, "coco/bbox_mAP_m": 0.587, "coco/bbox_mAP_l": -1.0,
}
# CrowdHumanMetric: 4 decimals, 'crowd_human/' prefix; mMR is a miss rate (lower is better)
CROWD_RAW = {"crowd_human/mAP": 0.8712, "crowd_human/mMR": 0.4653, "crowd_human/JI": 0.7921}


def test_coco_mapping_is_percent_with_paper_names():
    rec = M.to_metrics_json(COCO_RAW, "coco")
    assert list(rec) == ["dataset", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert rec == {"dataset": "coco", "AP": 53.6, "AP50": 81.2, "AP75": 60.4, "APs": 20.1, "APm": 58.7,
                   "APl": None}  # pycocotools' -1 (no large objects) is undefined, not a score


def test_crowdhuman_mapping():
    rec = M.to_metrics_json(CROWD_RAW, "crowdhuman")
    assert rec == {"dataset": "crowdhuman", "MR": 46.53, "AP": 87.12, "JI": 79.21}


def test_crowdhuman_without_detections_misses_everything():
    # CrowdHumanMetric averages log miss rates over an empty FPPI curve when nothing is detected: NaN
    raw = {"crowd_human/mAP": 0.0, "crowd_human/mMR": float("nan"), "crowd_human/JI": 0.0}
    assert M.to_metrics_json(raw, "crowdhuman") == {"dataset": "crowdhuman", "MR": 100.0, "AP": 0.0, "JI": 0.0}
    with pytest.raises(M.MetricsError, match="mMR"):  # NaN with detections that matched is not explained
        M.to_metrics_json({**raw, "crowd_human/mAP": 0.2}, "crowdhuman")


def test_mapping_accepts_unprefixed_keys_and_ignores_extras():
    raw = {k.split("/")[1]: v for k, v in COCO_RAW.items()} | {"bbox_mAP_copypaste": "x", "AR@100": 0.7}
    assert M.to_metrics_json(raw, "coco")["AP75"] == 60.4


@pytest.mark.parametrize("raw, dataset, match", [
    ({k: v for k, v in COCO_RAW.items() if k != "coco/bbox_mAP_75"}, "coco", "bbox_mAP_75"),
    (COCO_RAW, "voc", "unknown dataset"),
    ({**COCO_RAW, "other/bbox_mAP": 0.1}, "coco", "reported twice"),
    ({**COCO_RAW, "coco/bbox_mAP": 53.6}, "coco", "not a fraction"),
    ({**CROWD_RAW, "crowd_human/JI": "n/a"}, "crowdhuman", "not a number"),
])
def test_mapping_rejects_bad_evaluator_output(raw, dataset, match):
    with pytest.raises(M.MetricsError, match=match):
        M.to_metrics_json(raw, dataset)


def test_empty_coco_record_zero_where_ground_truth_exists(tmp_path):
    # areas: 20x20=400 (small), 40x40=1600 (medium), a crowd 100x100 region that COCO ignores
    ann = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "area": 400.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "area": 1600.0, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "area": 10000.0, "iscrowd": 1}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    assert M.empty_coco_record(path) == {"dataset": "coco", "AP": 0.0, "AP50": 0.0, "AP75": 0.0,
                                         "APs": 0.0, "APm": 0.0, "APl": None}


def test_infer_dataset():
    assert M.infer_dataset(dict(type="CocoMetric", ann_file="a.json")) == "coco"
    assert M.infer_dataset([dict(type="CrowdHumanMetric", ann_file="a.odgt")]) == "crowdhuman"
    with pytest.raises(M.MetricsError, match="no CocoMetric or CrowdHumanMetric"):
        M.infer_dataset(dict(type="VOCMetric"))


def test_metrics_json_roundtrip_and_validation(tmp_path):
    path = tmp_path / "metrics.json"
    rec = M.to_metrics_json(COCO_RAW, "coco")
    M.write_metrics_json(path, rec)
    assert json.loads(path.read_text())["APl"] is None
    assert M.read_metrics_json(path) == rec
    with pytest.raises(M.MetricsError, match="keys"):
        M.write_metrics_json(path, {**rec, "MR": 1.0})
    with pytest.raises(M.MetricsError, match="percentage"):
        M.write_metrics_json(path, {**rec, "AP": 153.6})
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        M.read_metrics_json(tmp_path / "nothing.json")


def test_atomic_write_interrupted_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    M.write_metrics_json(path, M.to_metrics_json(CROWD_RAW, "crowdhuman"))
    before = path.read_text()

    def crash(fd):  # the new text is in the temp file, not yet renamed: a kill here must not leave a torn file
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        M.write_metrics_json(path, M.to_metrics_json(COCO_RAW, "coco"))
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_eval_names_missing_files(tmp_path):
    from pgd import eval as pgd_eval
    from pgd.evaluation import run_eval

    with pytest.raises(run_eval.EvalError, match=r"config not found: .*config\.py"):
        run_eval.build_test_config(tmp_path, tmp_path / "model.pth")
    (tmp_path / "config.py").write_text("model = dict(type='ATSS')\n")
    with pytest.raises(run_eval.EvalError, match=r"checkpoint not found: .*model\.pth"):
        run_eval.build_test_config(tmp_path, tmp_path / "model.pth")
    (tmp_path / "model.pth").write_bytes(b"")
    with pytest.raises(run_eval.EvalError, match="no test_dataloader"):
        run_eval.build_test_config(tmp_path, tmp_path / "model.pth")
    assert pgd_eval.main(["--run-dir", str(tmp_path / "nope"), "--no-mlflow"]) == 2


def test_eval_of_trained_run_writes_metrics(tiny_run):
    """A run trained by `pgd train` evaluates to a valid metrics.json."""
    from pgd import eval as pgd_eval

    config_before = (tiny_run / "config.py").read_text()
    assert pgd_eval.main(["--run-dir", str(tiny_run), "--no-mlflow", "--threads", "1"]) == 0
    rec = M.read_metrics_json(tiny_run / "metrics.json")
    assert rec["dataset"] == "coco"
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= rec[key] <= 100.0
    assert rec["AP50"] >= rec["AP"] >= 0.0
    # which configuration and code the numbers come from (pgd.provenance)
    assert rec["provenance"]["digest"] == json.loads((tiny_run / "provenance.json").read_text())["digest"]
    # evaluation logs go under eval/, the run's config.py is left as training wrote it
    assert (tiny_run / "eval").is_dir()
    assert (tiny_run / "config.py").read_text() == config_before
