"""Run identity (pgd.provenance): what the digest covers, that `pgd train` and the workflow agree on it, and the
stale checks of `pgd table` / `pgd report` / `pgd status`."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from pgd import provenance as pv
from pgd.matrix import load_matrix, parse_matrix, run_dir
from pgd.report import page as P
from pgd.report import tables as T
from pgd.status import main as status_main
from pgd.run_setup import compose, run_recipe_of
from pgd.train import build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def m():
    return load_matrix()


@pytest.fixture(scope="module")
def expected(m):
    return pv.expected_digests(m, [0], "mini")


def test_digest_ignores_order_and_sees_values():
    a = {"model": {"type": "X", "depth": 50}, "seed": [1, 2]}
    b = {"seed": [1, 2], "model": {"depth": 50, "type": "X"}}
    assert pv.digest(a) == pv.digest(b) and len(pv.digest(a)) == pv.DIGEST_CHARS
    assert pv.digest(a) != pv.digest({**a, "seed": [2, 1]})
    assert pv.digest({"x": (1, 2)}) == pv.digest({"x": [1, 2]})


def test_recipe_drops_locations_and_keeps_what_they_stand_for():
    def cfg(data, pretrained, work):
        return {"work_dir": work,
                "train_dataloader": {"dataset": {"data_root": data, "ann_file": "a/train.json"}},
                "test_evaluator": {"ann_file": data.rstrip("/") + "/a/val.json"},
                "model": {"type": "DistillDetector", "teacher": {"config": f"{work}/../t/config.py"},
                          "student": {"backbone": {"init_cfg": {"type": "Pretrained",
                                                                "checkpoint": f"{pretrained}/r50.pth"}}}}}

    one = pv.run_recipe(cfg("/data/coco/", "/x/pre", "/w/1"), {"lr": 0.005}, "abc")
    two = pv.run_recipe(cfg("/elsewhere/coco", "/y", "/w/2"), {"lr": 0.005}, "abc")
    assert one == two
    assert one["config"]["test_evaluator"]["ann_file"] == "<data_root>/a/val.json"
    assert one["config"]["model"]["student"]["backbone"]["init_cfg"]["checkpoint"] == "<pretrained_dir>/r50.pth"
    assert one["config"]["model"]["teacher"] == {"digest": "abc"} and one["pretrain"] == {"lr": 0.005}
    # the teacher and the pretraining recipe are part of the identity
    assert pv.digest(one) != pv.digest(pv.run_recipe(cfg("/d", "/p", "/w"), {"lr": 0.005}, "abd"))
    assert pv.digest(one) != pv.digest(pv.run_recipe(cfg("/d", "/p", "/w"), {"lr": 0.004}, "abc"))


def test_changed_keys_names_leaves():
    old = {"config": {"a": {"alpha": 0.05, "k": [1, 2]}}}
    new = {"config": {"a": {"alpha": 0.06, "k": [1, 2, 3]}}}
    assert pv.changed_keys(old, new) == ["config.a.alpha: 0.05 -> 0.06", "config.a.k[2]: (absent) -> 3"]


def test_train_composes_the_digest_the_workflow_expects(tmp_path, m, expected):
    """For every run of the matrix, `pgd train --run` (with the workflow's relocated data, pretrained dir and
    teacher dir) records the digest the workflow computed: the DAG and the run directory agree."""
    runs = tmp_path / "results" / "mini" / "runs"
    for name, exp in expected.items():
        inst = m.by_name(name)
        argv = ["--run", inst.run.id, "--profile", "mini", "--work-dir", str(runs / name), "--seed", str(inst.seed),
                "--set", f"data_root={tmp_path}/data/", "--set", f"pretrained_dir={tmp_path}/pretrained"]
        teacher = m.teacher_of(inst)
        if teacher:
            tdir = runs / teacher.name
            tdir.mkdir(parents=True, exist_ok=True)
            for f in ("config.py", "model.pth"):
                (tdir / f).touch()
            pv.write_provenance(tdir, expected[teacher.name].recipe)
            argv += ["--teacher-dir", str(tdir)]
        cfg, _ = compose(build_parser().parse_args(argv))
        assert pv.digest(run_recipe_of(cfg, "mini")) == exp.digest, name


def test_seed_and_train_args_change_the_digest(m):
    seeds = pv.expected_digests(m, [0, 1], "mini")
    assert seeds["atss_r50_pgd"].digest != seeds["atss_r50_pgd_s1"].digest
    other = pv.expected_digests(m, [0], "mini", pv.Settings(train_args="--threads 1 --set train_cfg.max_iters=4"))
    assert other["atss_r50_pgd"].digest != seeds["atss_r50_pgd"].digest
    assert pv.train_overrides("--threads 2 --set a.b=3 --set=c=x") == {"a.b": 3, "c": "x"}


# ---------------------------------------------------------------------------------------------- tables / report

def _put(results, name, digest, recipe=None, metrics=None):
    d = run_dir("mini", name, 0, results)
    d.mkdir(parents=True, exist_ok=True)
    metrics = metrics or {"dataset": "crowdhuman", "MR": 50.0, "AP": 80.0, "JI": 70.0}
    (d / "metrics.json").write_text(json.dumps({**metrics, "provenance": {"digest": digest, "commit": "c0ffee" * 6,
                                                                          "dirty": False}}))
    if recipe is not None:
        pv.write_provenance(d, recipe)


def test_table_refuses_stale_metrics_and_marks_them_when_allowed(tmp_path, m, expected, capsys):
    t3 = [r.id for r in m.runs_for_table("t3")]
    for name in t3:
        _put(tmp_path, name, expected[name].digest, expected[name].recipe)
    stale_recipe = json.loads(json.dumps(expected["ddod_r50_crowd_fgd"].recipe))
    stale_recipe["config"]["model"]["kd_losses"][0]["alpha_fg"] = 0.5
    _put(tmp_path, "ddod_r50_crowd_fgd", pv.digest(stale_recipe), stale_recipe)

    argv = ["--table", "t3", "--results", str(tmp_path), "--out-dir", str(tmp_path / "t")]
    assert T.main(argv) == 2
    err = capsys.readouterr().err
    assert "ddod_r50_crowd_fgd: config.model.kd_losses[0].alpha_fg: 0.5 -> " in err
    assert "--allow-stale" in err and "ddod_r50_crowd_pgd" not in err
    assert not (tmp_path / "t" / "table3.tex").exists()

    assert T.main(argv + ["--allow-stale"]) == 0
    tex = (tmp_path / "t" / "table3.tex").read_text().split(r"\end{table}")[0]
    fgd = next(ln for ln in tex.splitlines() if ln.startswith("FGD"))
    pgd_line = next(ln for ln in tex.splitlines() if ln.startswith("Ours"))
    assert fgd.count(T.STALE_LATEX) == 3 and T.STALE_LATEX not in pgd_line

    with pytest.raises(pv.StaleRunsError, match="ddod_r50_crowd_fgd"):
        P.write_page("mini", [0], tmp_path, m)
    page = P.write_page("mini", [0], tmp_path, m, allow_stale=True).read_text()
    assert "**1 run(s) are stale**" in page and "`ddod_r50_crowd_fgd`" in page
    assert "`c0ffeec0ff` (8)" in page


def test_report_warns_when_a_table_mixes_commits(tmp_path, m, expected):
    for i, name in enumerate(r.id for r in m.runs_for_table("t3")):
        _put(tmp_path, name, expected[name].digest)
        if i == 0:
            path = run_dir("mini", name, 0, tmp_path) / "metrics.json"
            rec = json.loads(path.read_text())
            rec["provenance"].update(commit="1234567890" * 4, dirty=True)
            path.write_text(json.dumps(rec))
    page = P.build_page("mini", [0], tmp_path, m)
    t3 = page[page.index("## Table3"):page.index("## Table4")]
    assert "mixes runs computed with 2 code versions (1234567890+dirty, c0ffeec0ff)" in t3


# ---------------------------------------------------------------------------------------------- pgd status

def _status(capsys, tmp_path, matrix_path, *extra):
    assert status_main(["--config", f"results={tmp_path / 'results'}", f"matrix={matrix_path}",
                        "--directory", str(tmp_path), *extra]) == 0
    return dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()[:-1]), capsys


def test_status_names_the_changed_key_and_each_state(tmp_path, m, capsys):
    rows = [r for r in yaml.safe_load((REPO / "configs" / "experiments.yaml").read_text())["runs"]
            if r["id"] in ("atss_r101_teacher", "atss_r50_student", "atss_r50_pgd", "atss_r50_fgd",
                           "atss_r50_pgd_alpha0.05")]
    matrix_path = tmp_path / "matrix.yaml"
    matrix_path.write_text(yaml.safe_dump({"runs": rows}))
    small = parse_matrix({"runs": rows}, matrix_path)
    exp = pv.expected_digests(small, [0], "mini")
    results = tmp_path / "results"
    for name in ("atss_r101_teacher", "atss_r50_pgd_alpha0.05"):
        _put(results, name, exp[name].digest, exp[name].recipe, {"dataset": "coco", "AP": 1.0})
    # running: Snakemake's incomplete marker for its model.pth, and a live Snakemake's output lock naming it
    model = str(run_dir("mini", "atss_r50_pgd", 0, results) / "model.pth")
    marker = tmp_path / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(model.encode()).decode()
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    (tmp_path / ".snakemake" / "locks").mkdir()
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text(model + "\n")
    # failed: a log, no metrics
    log = results / "mini" / "logs" / "train" / "atss_r50_fgd.log"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...")

    lines, capsys = _status(capsys, tmp_path, matrix_path)
    assert lines["atss_r101_teacher"].strip() == "done"
    assert lines["atss_r50_pgd_alpha0.05"].strip() == "done"
    assert lines["atss_r50_pgd"].startswith("running") and "atss_r50_pgd.log" in lines["atss_r50_pgd"]
    assert lines["atss_r50_fgd"] == f"failed   log {log}"
    assert lines["atss_r50_student"].strip() == "missing"

    matrix_path.write_text(matrix_path.read_text().replace("alpha: 0.05", "alpha: 0.06"))
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").unlink()
    lines, capsys = _status(capsys, tmp_path, matrix_path)
    assert lines["atss_r50_pgd_alpha0.05"].startswith("stale")
    assert "config.model.kd_losses[0].alpha: 0.05 -> 0.06" in lines["atss_r50_pgd_alpha0.05"]
    assert lines["atss_r50_pgd"].startswith("failed   interrupted")
    # the teacher's settings come from --config as for snakemake: a longer teacher makes it and its students stale
    lines, _ = _status(capsys, tmp_path, matrix_path, "--config", "teacher_iters=1200")
    assert lines["atss_r101_teacher"].startswith("stale")
    assert "config.param_scheduler[1].end: 4050 -> 1200" in lines["atss_r101_teacher"]
