"""The experiment matrix: the committed file's content against the paper's tables, and validation errors."""
from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pgd.matrix import Cell, MatrixError, check_seeds, load_matrix, parse_matrix, run_dir, run_name

MATRIX = Path(__file__).resolve().parents[1] / "configs" / "experiments.yaml"


@pytest.fixture(scope="module")
def m():
    return load_matrix(MATRIX)


@pytest.fixture()
def doc():
    with open(MATRIX) as f:
        return yaml.safe_load(f)


def rows(m, table, block=None):
    return {c.row: r.id for r in m for c in r.cells if c.table == table and (block is None or c.block == block)}


def test_counts(m):
    assert len(m.teachers) == 6
    assert sum(r.dataset == "crowdhuman" for r in m.teachers) == 1
    assert {r.backbone for r in m.teachers} == {"r101"}
    assert len(m.students) == 79


def test_table1_blocks(m):
    base = {"Teacher", "Student", "DeFeat", "FRS", "FKD", "FGD", "Ours"}
    assert set(rows(m, "t1", "FCOS")) == base
    assert set(rows(m, "t1", "AutoAssign")) == base
    assert set(rows(m, "t1", "ATSS")) == base | {"FGFI"}
    assert set(rows(m, "t1", "GFL")) == base | {"LD"}
    assert set(rows(m, "t1", "DDOD")) == base | {"FGFI"}
    for block, runs in [(b, rows(m, "t1", b)) for b in ("FCOS", "ATSS", "GFL")]:
        assert m[runs["Teacher"]].backbone == "r101" and m[runs["Student"]].backbone == "r50"
        assert m[runs["Ours"]].method == "pgd" and m[runs["Ours"]].teacher == runs["Teacher"]


def test_shared_runs_trained_once(m):
    pgd = m["atss_r50_pgd"]
    assert pgd.tables == ["t1", "t5", "t6k", "t7"]
    assert Cell("t6k", "30", "ATSS") in pgd.cells
    student = m["atss_r50_student"]
    assert student.tables == ["t1", "t4", "t5", "t7"]
    assert m["atss_r101_teacher"].tables == ["t1", "t2", "t5"]


def test_other_tables(m):
    assert set(rows(m, "t2", "FCOS")) == set(rows(m, "t2", "ATSS")) == {"Teacher", "Student", "FGD", "Ours"}
    assert all(m[i].backbone == "mbv2" for k, i in rows(m, "t2").items() if k != "Teacher")
    t3 = rows(m, "t3")
    assert set(t3) == {"Teacher", "Student", "FKD", "DeFeat", "FRS", "FGFI", "FGD", "Ours"}
    assert {m[i].dataset for i in t3.values()} == {"crowdhuman"}
    # self-distillation: the R50 student is the teacher
    for det in ("FCOS", "ATSS"):
        t4 = rows(m, "t4", det)
        assert set(t4) == {"S & T", "FGD", "Ours"}
        assert m[t4["FGD"]].teacher == m[t4["Ours"]].teacher == t4["S & T"]
    t5 = rows(m, "t5")
    assert set(t5) == {"Teacher", "Student", "Box", "BoxGauss", "Centre", "Quality", "TopkEq", "KDE", "Ours"}
    assert m[t5["TopkEq"]].method_overrides == {"fg_strategy": "topkeq", "k": 30}
    t6k = rows(m, "t6k", "ATSS")
    assert sorted(map(int, t6k)) == [1, 5, 9, 15, 30, 45, 60]
    assert all(m[i].method_overrides["k"] == int(k) for k, i in t6k.items())
    for det in ("FCOS", "ATSS"):
        t6a = rows(m, "t6a", det)
        assert sorted(map(float, t6a)) == [0.005, 0.01, 0.03, 0.05, 0.07, 0.1, 0.2]
        assert all(m[i].method_overrides["alpha"] == float(a) for a, i in t6a.items())
    t7 = rows(m, "t7")
    assert set(t7) == {"Student", "Neck", "Cls", "Reg", "Cls + Reg"}
    assert m[t7["Neck"]].method_overrides["branches"] == ["neck"]
    assert "branches" not in m[t7["Cls + Reg"]].method_overrides


def test_required_runs_and_seeds(m):
    need = {r.id for r in m.required_runs("t5")}
    assert need == {"atss_r101_teacher", "atss_r50_student", "atss_r50_pgd"} | {
        f"atss_r50_pgd_{s}" for s in ("box", "boxgauss", "centre", "quality", "topkeq", "kde")}
    # t4's teachers are students
    assert "fcos_r50_student" in {r.id for r in m.required_runs("t4")}
    inst = m.instances([0, 1, 2])
    assert len(inst) == 6 + 3 * 79
    assert Counter(i.run.role for i in inst)["teacher"] == 6
    s2 = m.by_name("atss_r50_pgd_s2")
    assert (s2.run.id, s2.seed) == ("atss_r50_pgd", 2)
    assert m.teacher_of(s2).name == "atss_r101_teacher"
    assert len(m.cell_instances("t6k", [0, 1])) == 14


def test_run_dir():
    assert run_dir("mini", "atss_r50_pgd") == Path("results/mini/runs/atss_r50_pgd")
    assert run_dir("paper", "atss_r50_pgd", 3) == Path("results/paper/runs/atss_r50_pgd_s3")
    assert run_name("x", 0) == "x"


def test_as_dict_has_tables(m):
    d = m["fcos_r50_pgd"].as_dict()
    assert d["tables"] == ["t1"] and d["teacher"] == "fcos_r101_teacher" and d["method"] == "pgd"


@pytest.mark.parametrize("seeds,msg", [([], "empty"), ([1, 2], "lacks 0"), ([0, 0], "duplicates"),
                                       ([0, -1], "non-negative"), ([0, "1"], "non-negative")])
def test_bad_seeds(seeds, msg):
    with pytest.raises(MatrixError, match=msg):
        check_seeds(seeds)


def _mutate(doc, run_id, **changes):
    doc = copy.deepcopy(doc)
    row = next(r for r in doc["runs"] if r["id"] == run_id)
    for k, v in changes.items():
        if v is None:
            row.pop(k, None)
        else:
            row[k] = v
    return doc


@pytest.mark.parametrize("run_id,changes,msg", [
    ("fcos_r50_pgd", {"detecter": "fcos"}, r"unknown key\(s\) \['detecter'\]"),
    ("fcos_r50_pgd", {"teacher": "fcos_r152_teacher"}, "fcos_r152_teacher.*not in the matrix"),
    ("fcos_r50_pgd", {"teacher": "fcos_r50_pgd"}, "itself as its teacher"),
    ("fcos_r50_pgd", {"teacher": "atss_r101_teacher"}, "detector and dataset must match"),
    ("fcos_r50_pgd", {"teacher": "fcos_r50_fgd"}, "itself distilled"),
    ("fcos_r50_pgd", {"teacher": None}, "needs a teacher"),
    ("fcos_r50_pgd", {"method": "kd"}, "method 'kd' is not one of"),
    ("fcos_r50_pgd", {"method": "ld"}, "only to"),
    ("fcos_r50_pgd", {"cells": [{"table": "t9", "row": "Ours"}]}, "unknown table 't9'"),
    ("fcos_r50_pgd", {"cells": [{"table": "t1", "row": "Ours"}]}, "give a block"),
    ("fcos_r50_pgd", {"cells": [{"table": "t3", "row": "X"}]}, "cannot show a run on dataset 'coco'"),
    ("fcos_r50_pgd", {"cells": []}, "non-empty"),
    ("fcos_r50_pgd", {"cells": [{"table": "t1", "block": "FCOS", "row": "FGD"}]}, "fed by both"),
    ("fcos_r50_pgd", {"method_overrides": {"topk": 5}}, "method .pgd. has no option .topk."),
    ("fcos_r50_pgd", {"method_overrides": {"fg_strategy": "gauss"}}, "fg_strategy 'gauss'"),
    ("fcos_r50_pgd", {"method_overrides": {"k": 0}}, "positive integer"),
    ("fcos_r50_pgd", {"method_overrides": {"branches": ["head"]}}, "branches"),
    ("fcos_r50_student", {"teacher": "fcos_r101_teacher"}, "no method"),
    ("fcos_r101_teacher", {"method": "pgd", "teacher": "fcos_r50_student"}, "trained plainly"),
    ("fcos_r101_teacher", {"backbone": "r152"}, "backbone 'r152'"),
    ("fcos_r101_teacher", {"id": "fcos_teacher_s1"}, "reserved for seed"),
])
def test_validation_errors(doc, run_id, changes, msg):
    with pytest.raises(MatrixError, match=msg) as err:
        parse_matrix(_mutate(doc, run_id, **changes), "exp.yaml")
    assert "exp.yaml" in str(err.value)


def test_duplicate_ids(doc):
    doc["runs"].append(copy.deepcopy(doc["runs"][0]))
    with pytest.raises(MatrixError, match="duplicate run id 'fcos_r101_teacher'"):
        parse_matrix(doc, "exp.yaml")


def test_top_level_and_missing_file(tmp_path):
    with pytest.raises(MatrixError, match="one key, 'runs'"):
        parse_matrix({"run": []})
    with pytest.raises(MatrixError, match="not found"):
        load_matrix(tmp_path / "nope.yaml")
    with pytest.raises(MatrixError, match="unknown table"):
        load_matrix(MATRIX).runs_for_table("t8")
