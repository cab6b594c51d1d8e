"""Annotation validator: one test per kind of bad record; messages name the file and the record."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pgd.data.cli import main as data_main
from pgd.data.validate import AnnotationError, AnnotationWarning, validate_coco, validate_odgt


# ----------------------------------------------------------------------------- COCO
def _coco() -> dict:
    return dict(
        images=[dict(id=1, file_name="a.png", width=40, height=30), dict(id=7, file_name="b.png", width=20, height=20)],
        annotations=[dict(id=11, image_id=1, category_id=1, bbox=[0, 0, 40, 30], area=1200.0, iscrowd=0),
                     dict(id=12, image_id=1, category_id=2, bbox=[5.5, 6, 10, 3], area=30.0, iscrowd=0),
                     dict(id=13, image_id=7, category_id=2, bbox=[10, 10, 10.9, 5], area=54.5, iscrowd=0)],
        categories=[dict(id=1, name="circle", supercategory="shape"), dict(id=2, name="star", supercategory="shape")])


@pytest.fixture()
def coco_dir(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (40, 30)).save(img / "a.png")
    Image.new("RGB", (20, 20)).save(img / "b.png")
    return tmp_path


def _write(tmp: Path, data: dict, name: str = "ann.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(data))
    return path


def _rejects(tmp: Path, data: dict, *fragments: str, **kw) -> str:
    path = _write(tmp, data)
    with pytest.raises(AnnotationError) as err:
        validate_coco(path, tmp / "img", **kw)
    msg = str(err.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_coco_valid_file_passes_and_returns_content(coco_dir):
    data = validate_coco(_write(coco_dir, _coco()), coco_dir / "img", check_image_sizes=True)
    assert len(data["annotations"]) == 3
    assert isinstance(AnnotationError("x"), ValueError)


def test_coco_box_within_tolerance_passes_beyond_fails(coco_dir):
    d = _coco()
    d["annotations"][2]["bbox"] = [10, 10, 10.9, 5]  # x2 = 20.9 on a 20 px image: inside the 1 px tolerance
    validate_coco(_write(coco_dir, d), coco_dir / "img")
    d["annotations"][2]["bbox"] = [10, 10, 11.5, 5]
    _rejects(coco_dir, d, "annotation id 13", "image id 7", "outside the 20x20 image")
    d = _coco()
    d["annotations"][1]["bbox"] = [-1.5, 6, 10, 3]
    _rejects(coco_dir, d, "annotation id 12", "outside")


def test_coco_zero_or_negative_size(coco_dir):
    d = _coco()
    d["annotations"][1]["bbox"] = [5, 6, 0, 3]
    _rejects(coco_dir, d, "annotation id 12", "bbox [5, 6, 0, 3] has zero width/height")
    d["annotations"][2]["bbox"] = [5, 6, 4, 0]
    _rejects(coco_dir, d, "annotation id 12", "and 1 more annotations")
    d["annotations"][2]["bbox"] = [5, 6, 4, -2]
    _rejects(coco_dir, d, "annotation id 13", "bbox [5, 6, 4, -2] has negative width/height")


def test_coco_zero_size_can_be_tolerated_negative_cannot(coco_dir):
    """Real COCO train2017 has two height-0 boxes: zero_size='warn' names them and goes on."""
    d = _coco()
    d["annotations"][1]["bbox"] = [5, 6, 1.03, 0.0]
    path = _write(coco_dir, d)
    with pytest.warns(AnnotationWarning, match=r"annotation id 12 .*has zero width/height"):
        validate_coco(path, coco_dir / "img", zero_size="warn")
    d["annotations"][2]["bbox"] = [5, 6, -4, 2]
    _rejects(coco_dir, d, "annotation id 13", "negative", zero_size="warn")
    with pytest.raises(ValueError, match="zero_size must be one of"):
        validate_coco(path, zero_size="drop")


def test_coco_unknown_category(coco_dir):
    d = _coco()
    d["annotations"][2]["category_id"] = 9
    _rejects(coco_dir, d, "annotation id 13", "unknown category id 9")


def test_coco_unknown_image(coco_dir):
    d = _coco()
    d["annotations"][0]["image_id"] = 3
    _rejects(coco_dir, d, "annotation id 11", "unknown image id 3")


def test_coco_missing_image_file(coco_dir):
    d = _coco()
    d["images"][1]["file_name"] = "gone.png"
    _rejects(coco_dir, d, "image id 7", "'gone.png' not found")
    with pytest.raises(AnnotationError, match="image directory does not exist"):
        validate_coco(_write(coco_dir, _coco()), coco_dir / "nowhere")
    validate_coco(_write(coco_dir, d), None)  # no img_dir: file checks skipped


@pytest.mark.parametrize("kind,where", [("images", "image id 7"), ("annotations", "annotation id 12"),
                                        ("categories", "category id 2")])
def test_coco_duplicate_ids(coco_dir, kind, where):
    d = _coco()
    d[kind][0]["id"] = d[kind][1]["id"]
    _rejects(coco_dir, d, f"duplicate {where}", "#0, #1")


def test_coco_unreadable_json(coco_dir):
    path = coco_dir / "broken.json"
    path.write_text(json.dumps(_coco())[:-20])
    with pytest.raises(AnnotationError, match=r"broken\.json: unreadable JSON: .* line 1 column"):
        validate_coco(path)
    with pytest.raises(AnnotationError, match="cannot read annotation file"):
        validate_coco(coco_dir / "absent.json")
    with pytest.raises(AnnotationError, match="missing or non-list field 'annotations'"):
        validate_coco(_write(coco_dir, dict(images=[], categories=[])))


def test_coco_malformed_fields(coco_dir):
    d = _coco()
    del d["annotations"][1]["bbox"]
    _rejects(coco_dir, d, "annotation id 12", "missing field 'bbox'")
    d = _coco()
    d["annotations"][2]["bbox"] = [1, 2, 3]
    _rejects(coco_dir, d, "annotation id 13", "must have 4 numbers")
    d["annotations"][2]["bbox"] = [1, 2, float("nan"), 3]
    _rejects(coco_dir, d, "annotation id 13", "not finite")
    d = _coco()
    d["images"][0]["width"] = 0
    _rejects(coco_dir, d, "image id 1", "non-positive size 0x30")


def test_coco_image_size_mismatch(coco_dir):
    d = _coco()
    d["images"][1].update(width=25, height=25)
    validate_coco(_write(coco_dir, d), coco_dir / "img")  # header sizes are only read on request
    _rejects(coco_dir, d, "image id 7", "is 20x20 but the annotation says 25x25", check_image_sizes=True)


def test_coco_many_records_vectorised(tmp_path):
    """Large synthetic file: every check runs over arrays; one bad box among 50k is still pinpointed."""
    rng = np.random.default_rng(0)
    n_img, n_ann = 5_000, 50_000
    images = [dict(id=i, file_name=f"{i}.jpg", width=640, height=480) for i in range(1, n_img + 1)]
    xy = rng.uniform(0, 300, size=(n_ann, 2))
    wh = rng.uniform(1, 150, size=(n_ann, 2))
    anns = [dict(id=k + 1, image_id=int(k % n_img) + 1, category_id=1, bbox=[*xy[k], *wh[k]], area=1.0, iscrowd=0)
            for k in range(n_ann)]
    anns[31_337]["bbox"] = [600.0, 10.0, 50.0, 10.0]
    data = dict(images=images, annotations=anns, categories=[dict(id=1, name="x")])
    with pytest.raises(AnnotationError, match=r"annotation id 31338 \(image id 1338\).*outside the 640x480"):
        validate_coco(_write(tmp_path, data))


# ----------------------------------------------------------------------------- CrowdHuman .odgt
def _person(f, v=None, h=None, **extra):
    v = v or f
    h = h or [f[0], f[1], max(f[2] // 3, 1), max(f[3] // 6, 1)]
    return dict(fbox=f, tag="person", hbox=h, extra=dict(box_id=0, occ=0, **extra), vbox=v,
                head_attr=dict(ignore=0, occ=0, unsure=0))


def _odgt() -> list[dict]:
    return [dict(ID="1,a", gtboxes=[_person([10, 10, 20, 50]), _person([25, 5, 20, 60], [30, 5, 15, 30])]),
            dict(ID="2,b", gtboxes=[_person([0, 0, 30, 90], [0, 0, 30, 40]),
                                    dict(fbox=[40, 0, 20, 10], tag="mask", hbox=[40, 0, 20, 10],
                                         extra=dict(ignore=1), vbox=[40, 0, 20, 10], head_attr={})])]


@pytest.fixture()
def odgt_dir(tmp_path: Path) -> Path:
    img = tmp_path / "Images"
    img.mkdir()
    for rid in ("1,a", "2,b"):
        Image.new("RGB", (64, 80)).save(img / f"{rid}.jpg")
    return tmp_path


def _write_odgt(tmp: Path, records: list, name: str = "annotation_val.odgt") -> Path:
    path = tmp / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _odgt_rejects(tmp: Path, records: list, *fragments: str) -> str:
    path = _write_odgt(tmp, records)
    with pytest.raises(AnnotationError) as err:
        validate_odgt(path, tmp / "Images")
    msg = str(err.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_odgt_valid_file_passes_with_sizes(odgt_dir):
    index = validate_odgt(_write_odgt(odgt_dir, _odgt()), odgt_dir / "Images")
    assert index.ids == ["1,a", "2,b"] and index.num_boxes == 4
    assert index.sizes == {"1,a": (80, 64), "2,b": (80, 64)}  # (height, width) as in mmdet's id_hw cache
    assert validate_odgt(_write_odgt(odgt_dir, _odgt())).sizes is None


def test_odgt_unreadable_line(odgt_dir):
    path = odgt_dir / "annotation_val.odgt"
    path.write_text(json.dumps(_odgt()[0]) + "\n" + json.dumps(_odgt()[1])[:-5] + "\n")
    with pytest.raises(AnnotationError, match=r"annotation_val\.odgt: line 2: unreadable JSON"):
        validate_odgt(path)
    path.write_text(json.dumps(_odgt()[0]) + "\n\n" + json.dumps(_odgt()[1]) + "\n")
    with pytest.raises(AnnotationError, match="line 2: unreadable JSON"):  # mmdet would crash on the blank line
        validate_odgt(path)


def test_odgt_duplicate_id(odgt_dir):
    recs = _odgt()
    recs[1]["ID"] = "1,a"
    _odgt_rejects(odgt_dir, recs, "duplicate ID 1,a on lines [1, 2]")


def test_odgt_missing_id_or_gtboxes(odgt_dir):
    recs = _odgt()
    del recs[1]["ID"]
    _odgt_rejects(odgt_dir, recs, "line 2", "non-empty string 'ID'")
    recs = _odgt()
    del recs[0]["gtboxes"]
    _odgt_rejects(odgt_dir, recs, "line 1 (ID 1,a)", "'gtboxes'")


def test_odgt_unknown_tag(odgt_dir):
    recs = _odgt()
    recs[1]["gtboxes"][0]["tag"] = "Person"
    _odgt_rejects(odgt_dir, recs, "line 2 (ID 2,b), gtboxes[0]", "unknown tag 'Person'")


def test_odgt_zero_or_negative_size(odgt_dir):
    recs = _odgt()
    recs[0]["gtboxes"][1]["fbox"] = [25, 5, 0, 60]
    _odgt_rejects(odgt_dir, recs, "line 1 (ID 1,a), gtboxes[1]", "fbox [25, 5, 0, 60] has zero width/height")
    with pytest.warns(AnnotationWarning, match=r"line 1 \(ID 1,a\), gtboxes\[1\]: fbox"):
        validate_odgt(_write_odgt(odgt_dir, recs), odgt_dir / "Images", zero_size="warn")
    recs = _odgt()
    recs[1]["gtboxes"][0]["vbox"] = [0, 0, 30, -4]
    _odgt_rejects(odgt_dir, recs, "line 2 (ID 2,b), gtboxes[0]", "vbox [0, 0, 30, -4] has negative")


def test_odgt_degenerate_head_only_fails_when_head_is_used(odgt_dir):
    recs = _odgt()
    recs[0]["gtboxes"][0]["hbox"] = [10, 10, 0, 0]
    _odgt_rejects(odgt_dir, recs, "line 1 (ID 1,a), gtboxes[0]", "hbox")
    recs[0]["gtboxes"][0]["head_attr"]["ignore"] = 1
    validate_odgt(_write_odgt(odgt_dir, recs), odgt_dir / "Images")


def test_odgt_boxes_outside_image(odgt_dir):
    recs = _odgt()
    recs[1]["gtboxes"][0]["fbox"] = [-20, 30, 60, 90]  # amodal full box past the border: allowed
    recs[1]["gtboxes"][0]["vbox"] = [0, 30, 40, 50.9]  # within the 1 px tolerance of the 64x80 image
    validate_odgt(_write_odgt(odgt_dir, recs), odgt_dir / "Images")
    recs[1]["gtboxes"][0]["vbox"] = [0, 30, 40, 52]
    _odgt_rejects(odgt_dir, recs, "line 2 (ID 2,b), gtboxes[0]", "vbox", "outside the 64x80 image")
    recs = _odgt()
    recs[0]["gtboxes"][0]["fbox"] = [70, 10, 20, 50]
    _odgt_rejects(odgt_dir, recs, "line 1 (ID 1,a), gtboxes[0]", "entirely outside")


def test_odgt_missing_image_file(odgt_dir):
    (odgt_dir / "Images" / "2,b.jpg").unlink()
    _odgt_rejects(odgt_dir, _odgt(), "line 2 (ID 2,b)", "'2,b.jpg' not found")


def test_odgt_empty_gtboxes(odgt_dir):
    recs = _odgt()
    recs[1]["gtboxes"] = []
    _odgt_rejects(odgt_dir, recs, "line 2 (ID 2,b)", "empty 'gtboxes'")
    validate_odgt(_write_odgt(odgt_dir, recs), odgt_dir / "Images", allow_empty=True)


def test_odgt_malformed_box_field(odgt_dir):
    recs = _odgt()
    del recs[0]["gtboxes"][1]["hbox"]
    _odgt_rejects(odgt_dir, recs, "line 1 (ID 1,a), gtboxes[1]", "'hbox'")
    recs = _odgt()
    recs[1]["gtboxes"][1]["vbox"] = [1, 2, 3]
    _odgt_rejects(odgt_dir, recs, "line 2 (ID 2,b), gtboxes[1]", "'vbox'", "4 finite numbers")


# ----------------------------------------------------------------------------- CLI
def test_cli_validate_exit_codes(coco_dir, odgt_dir, capsys):
    good = _write(coco_dir, _coco())
    assert data_main(["validate", "--coco", str(good), "--img-dir", str(coco_dir / "img")]) == 0
    assert "OK (2 images, 3 annotations, 2 categories)" in capsys.readouterr().out
    bad = copy.deepcopy(_coco())
    bad["annotations"][0]["category_id"] = 5
    bad_path = _write(coco_dir, bad, "bad.json")
    assert data_main(["validate", "--coco", str(bad_path), "--img-dir", str(coco_dir / "img")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "annotation id 11" in err and "unknown category id 5" in err
    odgt = _write_odgt(odgt_dir, _odgt())
    assert data_main(["validate", "--odgt", str(odgt), "--img-dir", str(odgt_dir / "Images")]) == 0
    (odgt_dir / "Images" / "1,a.jpg").unlink()
    assert data_main(["validate", "--odgt", str(odgt), "--img-dir", str(odgt_dir / "Images")]) == 2
    assert "line 1 (ID 1,a)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- property: the culprit is named
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(n_img=st.integers(1, 6), n_ann=st.integers(1, 30), seed=st.integers(0, 2**16), bad=st.data(),
       kind=st.sampled_from(["outside", "zero", "category", "image"]))
def test_coco_first_bad_annotation_is_named(tmp_path_factory, n_img, n_ann, seed, bad, kind):
    rng = np.random.default_rng(seed)
    size = rng.integers(20, 200, size=(n_img, 2))
    owner = rng.integers(0, n_img, size=n_ann)
    wh = np.maximum(1, np.floor(rng.uniform(0.05, 1.0, (n_ann, 2)) * size[owner]))
    xy = np.floor(rng.uniform(0, 1, (n_ann, 2)) * (size[owner] - wh + 1))
    ids = rng.permutation(np.arange(100, 100 + 3 * n_ann))[:n_ann]  # ids need not be sorted or dense
    data = dict(images=[dict(id=i + 1, file_name=f"{i}.png", width=int(w), height=int(h))
                        for i, (w, h) in enumerate(size)],
                annotations=[dict(id=int(ids[k]), image_id=int(owner[k]) + 1, category_id=1,
                                  bbox=[*xy[k].tolist(), *wh[k].tolist()], area=1.0, iscrowd=0) for k in range(n_ann)],
                categories=[dict(id=1, name="a")])
    path = tmp_path_factory.mktemp("prop") / "ann.json"
    path.write_text(json.dumps(data))
    validate_coco(path)
    k = bad.draw(st.integers(0, n_ann - 1))
    a = data["annotations"][k]
    if kind == "outside":
        a["bbox"][0] = float(size[owner[k], 0]) + 2.0
    elif kind == "zero":
        a["bbox"][3] = 0.0
    elif kind == "category":
        a["category_id"] = 2
    else:
        a["image_id"] = n_img + 5
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=rf"annotation id {a['id']}\b"):
        validate_coco(path)
