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
    # 79 of the paper's tables, 5 "Inherit only" controls, 11 no-inherit runs of the initialisation study (t1i),
    # 2 PGD runs under the official code's normalisation (tpc)
    assert len(m.students) == 97
    # at three seeds: Table 1's ATSS block (8 rows), FCOS's Student, Inherit only and Ours, the 2 code-norm runs
    assert len(m.instances([0])) == 6 + 97 + 2 * (8 + 3 + 2)


def test_atss_block_has_three_seeds_and_others_one(m):
    atss = rows(m, "t1", "ATSS")
    for row, rid in atss.items():
        seeds = [i.seed for i in m.instances([0], [m[rid]])]
        assert seeds == ([0] if row == "Teacher" else [0, 1, 2]), row
    assert [i.seed for i in m.instances([0], [m["fcos_r50_pgd"]])] == [0, 1, 2]
    assert [i.seed for i in m.instances([0], [m["fcos_r50_fkd"]])] == [0]
    # the profile's seeds and the row's are united, the profile's first
    assert [i.name for i in m.instances([0, 5], [m["atss_r50_pgd"]])] == [
        "atss_r50_pgd", "atss_r50_pgd_s5", "atss_r50_pgd_s1", "atss_r50_pgd_s2"]


def test_every_table1_block_has_an_inherit_only_control(m):
    for block in ("FCOS", "AutoAssign", "ATSS", "GFL", "DDOD"):
        control = m[rows(m, "t1", block)["Inherit only"]]
        assert control.method == "inherit" and control.teacher == rows(m, "t1", block)["Teacher"]


def test_init_study_pairs_each_method_with_its_no_inherit_run(m):
    for block in ("ATSS", "FCOS"):
        study = rows(m, "t1i", block)
        t1 = rows(m, "t1", block)
        methods = [r for r in t1 if r not in ("Teacher", "Student", "Inherit only")]
        assert set(study) == {"Student", "Inherit only", *methods, *(f"{r}, no inherit" for r in methods)}
        for r in methods:
            assert study[r] == t1[r]                      # the Table 1 run itself, not a copy
            other = m[study[f"{r}, no inherit"]]
            assert other.method == m[t1[r]].method and other.method_overrides["init_student"] is False


def test_row_seeds_are_checked():
    base = {"id": "a", "detector": "atss", "backbone": "r50", "role": "student",
            "cells": [{"table": "t1", "block": "ATSS", "row": "Student"}]}
    with pytest.raises(MatrixError, match="lacks 0"):
        parse_matrix({"runs": [{**base, "seeds": [1, 2]}]})
    with pytest.raises(MatrixError, match="must be a list"):
        parse_matrix({"runs": [{**base, "seeds": 3}]})
    teacher = {**base, "id": "t", "role": "teacher", "backbone": "r101", "seeds": [0, 1]}
    with pytest.raises(MatrixError, match="a teacher trains once"):
        parse_matrix({"runs": [teacher]})


def test_table1_blocks(m):
    base = {"Teacher", "Student", "Inherit only", "DeFeat", "FRS", "FKD", "FGD", "Ours"}
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
    assert pgd.tables == ["t1", "t1i", "t5", "t6k", "t7", "tpc"]
    assert Cell("t6k", "30", "ATSS") in pgd.cells
    student = m["atss_r50_student"]
    assert student.tables == ["t1", "t1i", "t4", "t5", "t7", "tpc"]
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
    assert len(inst) == 6 + 3 * 97   # the rows' own seeds [0, 1, 2] are within the profile's
    assert Counter(i.run.role for i in inst)["teacher"] == 6
    s2 = m.by_name("atss_r50_pgd_s2")
    assert (s2.run.id, s2.seed) == ("atss_r50_pgd", 2)
    assert m.teacher_of(s2).name == "atss_r101_teacher"
    assert len(m.cell_instances("t6k", [0, 1])) == 15     # K = 30 is atss_r50_pgd, at its own seeds 0-2


def test_run_dir():
    assert run_dir("mini", "atss_r50_pgd") == Path("results/mini/runs/atss_r50_pgd")
    assert run_dir("paper", "atss_r50_pgd", 3) == Path("results/paper/runs/atss_r50_pgd_s3")
    assert run_name("x", 0) == "x"


def test_as_dict_has_tables(m):
    d = m["fcos_r50_pgd"].as_dict()
    assert d["tables"] == ["t1", "t1i", "tpc"] and d["teacher"] == "fcos_r101_teacher" and d["method"] == "pgd"


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
