"""Table rendering: fixed metrics -> the expected LaTeX (layout, gains, rounding, mean +- std) and CSV."""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pgd.matrix import TABLES, load_matrix, run_dir
from pgd.report import tables as T

COCO = T.COCO_METRICS


@pytest.fixture(scope="module")
def m():
    return load_matrix()


def without_row_seeds(matrix):
    """The matrix with every row at the profile's seeds only (tests that choose the seeds themselves)."""
    from dataclasses import replace

    from pgd.matrix import Matrix

    return Matrix([replace(r, seeds=()) for r in matrix], matrix.path)


@pytest.fixture(scope="module")
def paper():
    return T.load_paper_numbers()


@functools.cache
def expected():
    """The current configuration's run digests (what a fresh run's metrics.json carries)."""
    from pgd.provenance import expected_digests

    return expected_digests(load_matrix(), [0, 1, 2], "mini")


def put(results, name, digest=None, **metrics):
    d = run_dir("mini", name, 0, results)
    if "_s" in name and name.rsplit("_s", 1)[1].isdigit():
        base, seed = name.rsplit("_s", 1)
        d = run_dir("mini", base, int(seed), results)
    d.mkdir(parents=True, exist_ok=True)
    prov = {"digest": digest or expected()[name].digest, "commit": "0123456789abcdef", "dirty": False}
    (d / "metrics.json").write_text(json.dumps({**metrics, "provenance": prov}))


def coco(ap, *rest):
    vals = (ap,) + rest + (0.0,) * (6 - 1 - len(rest))
    return dict(zip(COCO, vals), dataset="coco")


T3 = {  # run -> (MR, AP, JI)
    "ddod_r101_crowd_teacher": (41.4, 90.2, 81.4), "ddod_r50_crowd_student": (46.0, 88.0, 79.0),
    "ddod_r50_crowd_fkd": (44.3, 89.1, 80.0), "ddod_r50_crowd_defeat": (44.2, 89.1, 79.9),
    "ddod_r50_crowd_frs": (44.1, 89.2, 80.3), "ddod_r50_crowd_fgfi": (43.8, 89.2, 80.3),
    "ddod_r50_crowd_fgd": (43.1, 89.3, 80.4), "ddod_r50_crowd_pgd": (42.8, 90.0, 80.7),
}


def test_table3_crowdhuman_layout_and_mr_sign(tmp_path, m):
    for run, (mr, ap, ji) in T3.items():
        put(tmp_path, run, dataset="crowdhuman", MR=mr, AP=ap, JI=ji)
    tex, csv = T.write_table("t3", "mini", [0], tmp_path, matrix=m)
    text = tex.read_text()
    ours = text.split(r"\end{table}")[0]
    assert r"\toprule" in ours and r"\midrule" in ours and r"\bottomrule" in ours
    assert r"Setting & MR $\downarrow$ & AP & JI $\uparrow$ & n \\" in ours     # n: seeds per row
    assert r"Student & 46.0 & 88.0 & 79.0 & 1 \\" in ours
    # MR falls by 1.7 -> printed with its sign, as the paper does (single runs: no significance mark)
    assert r"FKD & 44.3 (-1.7) & 89.1 (+1.1) & 80.0 (+1.0) & 1 \\" in ours
    assert r"Ours & 42.8 (-3.2) & 90.0 (+2.0) & 80.7 (+1.7) & 1 \\" in ours
    assert r"\label{tab:table3}" in ours and r"\label{tab:table3-paper}" in text
    # rows in the paper's order
    order = [ln.split(" & ")[0] for ln in ours.splitlines() if ln.count(" & ") == 4][1:]
    assert order == ["Teacher", "Student", "FKD", "DeFeat", "FRS", "FGFI", "FGD", "Ours"]
    df = pd.read_csv(csv)
    assert len(df) == 8 * 3
    row = df[(df.row == "Ours") & (df.metric == "MR")].iloc[0]
    assert (row["mean"], row["gain"], row["paper"], row["paper_gain"], row["n"]) == (42.8, -3.2, 42.8, -3.2, 1)
    assert row["runs"] == "ddod_r50_crowd_pgd"


def test_rounding_and_gain_from_displayed_values(tmp_path, m):
    # t4 FCOS block: S & T 39.66 shows 39.7, Ours 44.24 shows 44.2: the gain is 44.2 - 39.7 = +4.5 (not +4.58)
    put(tmp_path, "fcos_r50_student", **{**coco(39.66, 57.95, 40.04), "APl": None})
    put(tmp_path, "fcos_r50_self_fgd", **coco(39.61, 58.0, 40.0))
    put(tmp_path, "fcos_r50_self_pgd", **{**coco(44.24, 57.86, 41.0), "APl": None})
    df = T.build("t4", "mini", [0], tmp_path, m, allow_missing=True)
    frame = T.cell_frame("t4", df, "ours")
    assert frame.loc[("FCOS", "S & T"), "AP"] == "39.7"
    assert frame.loc[("FCOS", "Ours"), "AP"] == "44.2 (+4.5)"
    assert frame.loc[("FCOS", "FGD"), "AP"] == "39.6 (-0.1)"
    assert frame.loc[("FCOS", "Ours"), "AP$_L$"] == "--"                     # null in metrics.json
    assert frame.loc[("FCOS", "FGD"), "AP$_L$"] == "0.0"                     # student APl null: no gain
    assert frame.loc[("FCOS", "Ours"), "AP$_{50}$"] == "57.9 (-0.1)"    # 57.86 -> 57.9 minus 57.95 -> 58.0
    # ATSS block has no metrics: shown as -- (allow_missing), its paper companion still filled
    assert frame.loc[("ATSS", "Ours"), "AP"] == "--"
    assert T.cell_frame("t4", df, "paper").loc[("ATSS", "Ours"), "AP"] == "40.7 (+1.1)"
    tex = T.render("t4", df, "table4", "mini")
    assert r"S \& T" in tex                                  # the row label is escaped for LaTeX
    # the detector on its block's first line, as the paper prints it (no \multirow: one package fewer)
    assert "FCOS & S \\& T & 39.7 & " in tex and "\n & FGD & 39.6 (-0.1) & " in tex and "multirow" not in tex
    assert r"Detector & Setting & AP & AP$_{50}$" in tex
    # booktabs: a \midrule between the blocks, none right before \bottomrule
    assert tex.count("\\midrule\nATSS & S \\& T") == 2 and "\\midrule\n\\bottomrule" not in tex


def test_seeds_mean_pm_std(tmp_path, m):
    m = without_row_seeds(m)
    # two seeds of every t6k run: AP 40 and 41 -> 40.5 +- 0.7 (sample std 0.7071)
    for r in m.runs_for_table("t6k"):
        put(tmp_path, r.id, **coco(40.0))
        put(tmp_path, f"{r.id}_s1", **coco(41.0))
    df = T.build("t6k", "mini", [0, 1], tmp_path, m)
    assert set(df["n"]) == {2}
    assert df.loc[df.row == "30", "std"].iloc[0] == pytest.approx(0.70710678)
    tex = T.render("t6k", df, "table6_k", "mini")
    assert "K & 1 & 5 & 9 & 15 & 30 & 45 & 60 \\\\" in tex
    assert "ATSS & " + " & ".join([r"40.5$\pm$0.7 (n=2)"] * 7) + r" \\" in tex
    assert "ATSS & 43.2 & 43.5 & 43.6 & 43.9 & 44.2 & 44.0 & 43.9 \\\\" in tex     # the paper's companion
    assert "40.5±0.7 (n=2)" in T.to_markdown("t6k", df, "ours")


def test_table7_branch_marks(tmp_path, m):
    for i, r in enumerate(m.runs_for_table("t7")):
        for inst in m.instances([0], [r]):
            put(tmp_path, inst.name, **coco(40.0 + i))
    df = T.build("t7", "mini", [0], tmp_path, m)
    tex = T.render("t7", df, "table7", "mini")
    assert r"neck & cls & reg & AP &" in tex
    lines = [ln for ln in tex.split(r"\end{table}")[0].splitlines() if ln.count("&") == 9]   # + the n column
    marks = [tuple(c.strip() == T.CHECK for c in ln.split("&")[:3]) for ln in lines[1:]]
    assert marks == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1)]


def test_missing_metrics_is_a_clear_error(tmp_path, m):
    with pytest.raises(T.TableError, match=r"ddod_r101_crowd_teacher/metrics.json: metrics.json not found"):
        T.build("t3", "mini", [0], tmp_path, m)
    put(tmp_path, "ddod_r101_crowd_teacher", MR=1.0, AP=2.0)
    with pytest.raises(T.TableError, match=r"missing or non-numeric metric\(s\) \['JI'\]"):
        T.build("t3", "mini", [0], tmp_path, m)
    with pytest.raises(T.TableError, match="unknown table"):
        T.build("t8", "mini", [0], tmp_path, m)


def test_paper_numbers_cover_the_matrix(m, paper):
    keys = set(zip(paper.table, paper.block, paper.row))
    # the paper has no Inherit-only control rows and no initialisation study (t1i)
    cells = {(c.table, c.block or "", c.row) for r in m for c in r.cells
             if c.table not in ("t1i", "tpc") and c.row != "Inherit only"}
    assert keys == cells
    assert len(paper) == 441
    v = paper.set_index(["table", "block", "row", "metric"])["value"]
    assert v[("t1", "ATSS", "Ours", "AP")] == 44.2 and v[("t3", "", "Ours", "MR")] == 42.8
    assert v[("t6a", "FCOS", "0.005", "AP")] == 41.7 and v[("t7", "", "Reg", "APl")] == 53.9


def test_paper_gains_match_the_printed_ones(paper, m):
    df = T.tidy("t1", pd.DataFrame(columns=["block", "row", "metric", "mean", "std", "n", "runs"]), paper,
                T.row_order("t1", m, paper)).set_index(["block", "row", "metric"])["paper_gain"]
    assert df[("FCOS", "Ours", "AP")] == pytest.approx(4.3)
    assert df[("ATSS", "Ours", "APl")] == pytest.approx(5.9)
    assert df[("DDOD", "DeFeat", "APs")] == pytest.approx(0.0)
    assert pd.isna(df[("GFL", "Teacher", "AP")]) and pd.isna(df[("GFL", "Student", "AP")])


def test_cli(tmp_path, m):
    for run, (mr, ap, ji) in T3.items():
        put(tmp_path, run, dataset="crowdhuman", MR=mr, AP=ap, JI=ji)
    assert T.main(["--table", "t3", "--results", str(tmp_path), "--out-dir", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "table3.tex").is_file() and (tmp_path / "t" / "table3.csv").is_file()


def test_paper_notes_on_printed_gains_and_the_duplicated_row(m, paper):
    """The paper's companion of Table 1 footnotes its printed +5.8 (its values give +4.8) and its ATSS FGFI row,
    a copy of its DeFeat row; marks are lettered in table order."""
    df = T.build("t1", "mini", [0], "/nonexistent", m, allow_missing=True)
    notes = T.paper_notes("t1", df)
    assert notes == [
        (("FCOS", "Ours", "APm"), "The paper prints +5.8 here; its own values give +4.8."),
        (("AutoAssign", "Ours", "AP"), "The paper prints +3.1 here; its own values give +3.2."),
        (("ATSS", "FGFI", "AP"), "The paper prints this FGFI row identical to its DeFeat row (ATSS), probably a "
                                 "copy error; shown as printed.")]
    frame = T.cell_frame("t1", df, "paper")
    assert frame.loc[("FCOS", "Ours"), "AP$_M$"] == "46.1 (+4.8)$^{a}$"
    assert frame.loc[("ATSS", "FGFI"), "AP"] == "41.8 (+2.2)$^{c}$"
    assert frame.loc[("ATSS", "DeFeat"), "AP"] == "41.8 (+2.2)"
    assert T.cell_frame("t1", df, "ours").loc[("FCOS", "Ours"), "AP$_M$"] == "--"     # ours carry no marks
    tex = T.render("t1", df, "table1", "mini")
    paper_float = tex.split(r"\end{table}")[1]
    assert "$^{a}$ The paper prints +5.8 here; its own values give +4.8.\\\\\n" in paper_float
    assert "\n[a] The paper prints +5.8 here" in T.to_markdown("t1", df, "paper")
    # Table 4: three printed gains differ (ATSS FGD and Ours AP75, Ours APs); Table 6 repeats values, no note
    t4 = T.paper_notes("t4", T.build("t4", "mini", [0], "/nonexistent", m, allow_missing=True))
    assert [k for k, _ in t4] == [("ATSS", "FGD", "AP75"), ("ATSS", "Ours", "AP75"), ("ATSS", "Ours", "APs")]
    assert T.paper_notes("t6k", T.build("t6k", "mini", [0], "/nonexistent", m, allow_missing=True)) == []


def test_every_printed_gain_note_matches_the_paper_numbers(paper):
    """paper_printed_gains.csv names real cells whose printed gain differs from the recomputed one."""
    v = paper.set_index(["table", "block", "row", "metric"])["value"]
    base = {"t1": "Student", "t4": "S & T"}
    for p in T.load_printed_gains().itertuples():
        computed = round(v[(p.table, p.block, p.row, p.metric)] - v[(p.table, p.block, base[p.table], p.metric)], 1)
        assert abs(computed - p.printed) > 0.05, p


def _fill_matrix(results, m):
    """Every run of the matrix with the widest cells the tables print: 100.0 (+88.9) on a 11.1 baseline."""
    for inst in m.instances([0]):
        r = inst.run
        low = r.role == "student" and not r.method
        if r.dataset == "crowdhuman":
            put(results, inst.name, dataset="crowdhuman", MR=11.1 if low else 100.0, AP=11.1 if low else 100.0,
                JI=50.0)
        else:
            put(results, inst.name, **coco(*([11.1 if low else 100.0] * 6)))


def test_preamble_lists_what_the_tables_use(tmp_path, m):
    _fill_matrix(tmp_path, m)
    tex, _ = T.write_table("t7", "mini", [0], tmp_path, matrix=m)
    preamble = (tex.parent / "preamble.tex").read_text()
    assert [ln.split("}")[0] for ln in preamble.splitlines() if ln.startswith("\\usepackage")] == [
        "\\usepackage{booktabs", "\\usepackage{graphicx", "\\usepackage{amssymb"]
    assert tex.read_text().splitlines()[0].endswith("needs \\usepackage{booktabs,graphicx,amssymb} "
                                                     "(preamble.tex beside this file).")


LATEX_PACKAGES = T.PACKAGES   # what preamble.tex loads


def _latex_missing() -> str | None:
    """Why the TeX check cannot run here, or None. A TeX engine without the packages the tables need (a minimal
    texlive, or one being installed while the suite runs) is a machine without TeX for this test, not a failure."""
    if not shutil.which("pdflatex") or not shutil.which("kpsewhich"):
        return "no TeX engine (pdflatex, kpsewhich) on this machine"
    needed = [f"{p}.sty" for p in LATEX_PACKAGES] + ["pdflatex.fmt"]
    found = subprocess.run(["kpsewhich", "-engine=pdftex", *needed], capture_output=True, text=True,
                           timeout=60).stdout.split()
    missing = [n for n in needed if not any(f.endswith("/" + n) for f in found)]
    return f"TeX lacks {', '.join(missing)}" if missing else None


LATEX_MISSING = _latex_missing()


@pytest.mark.skipif(LATEX_MISSING is not None, reason=f"{LATEX_MISSING}: apt-get install texlive-latex-base "
                                                         "texlive-latex-recommended")
def test_every_table_compiles_and_fits_a_portrait_page(tmp_path, m):
    """Every table (the paper's eight and the two studies), every cell at its widest, compiles in a plain article
    with preamble.tex alone and raises no overfull box (Table 1 is scaled to the text width, narrow tables keep
    their size)."""
    from pgd.report import latex

    _fill_matrix(tmp_path, m)
    for t in TABLES:   # the paper's eight and the two studies (SPECS also holds the extras table)
        T.write_table(t, "mini", [0], tmp_path, matrix=m)
    tables = tmp_path / "mini" / "tables"
    pngs = latex.render_pngs(tables, tmp_path / "png" if shutil.which("pdftoppm") else None)
    assert len(pngs) in (0, len(TABLES))
    # the check bites: a tabular wider than the page without the \resizebox is reported
    wide = tables / "table1.tex"
    wide.write_text(wide.read_text().replace("\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n", "")
                    .replace("\\end{tabular}}", "\\end{tabular}"))
    with pytest.raises(latex.LatexError, match=r"table1.tex: 2 overfull box\(es\), first: Overfull \\hbox"):
        latex.compile_tables([wide], tables / "preamble.tex", tmp_path / "wide")


def test_report_page(tmp_path, m):
    """The page holds every table (markdown + LaTeX), the settings read back from config.py, and the figures."""
    from pgd.config import compose_config
    from pgd.report import page as P

    for run, (mr, ap, ji) in T3.items():
        put(tmp_path, run, dataset="crowdhuman", MR=mr, AP=ap, JI=ji)
    T.write_table("t3", "mini", [0], tmp_path, matrix=m)
    r = m["ddod_r50_crowd_pgd"]
    cfg = compose_config(r.detector, r.backbone, "mini", r.role, dataset=r.dataset, method=r.method,
                         method_overrides=r.method_overrides,
                         teacher=dict(config="t/config.py", checkpoint="t/model.pth"))
    cfg.dump(str(run_dir("mini", r.id, 0, tmp_path) / "config.py"))
    (tmp_path / "mini" / "figures").mkdir(parents=True)
    (tmp_path / "mini" / "figures" / "fig3.png").write_bytes(b"\x89PNG")
    (tmp_path / "mini" / "figures" / "fig3.pdf").write_bytes(b"%PDF-")
    (tmp_path / "mini" / "tables" / "table3.png").write_bytes(b"\x89PNG")
    page = P.write_page("mini", [0], tmp_path, m).read_text()
    import re

    assert re.search(r"\| Ours\s+\| 42\.8 \(-3\.2\)\s+\| 90\.0 \(\+2\.0\)\s+\| 80\.7 \(\+1\.7\) \|", page)
    assert page.count("```latex") == 1 and r"\label{tab:table3}" in page
    settings = page[page.index("**Settings the runs trained with**"):]
    line = next(ln for ln in settings.splitlines() if ln.startswith("| ddod_r50_crowd_pgd"))
    assert "PGDLoss(" in line and "alpha=0.001" in line and "preset=paper" in line
    assert "| ddod_r50_crowd_fgd " in settings and "config.py missing" in settings
    assert "![Fig. 3:" in page and "figures/fig1.png not built yet" in page
    # a PDF is linked only where it exists; a table's PNG (python -m pgd.report.latex) is shown above its LaTeX
    assert "([PDF](figures/fig3.pdf))" in page and "fig1.pdf" not in page
    assert "![table3 as pdflatex sets it](tables/table3.png)" in page and "tables/table1.png" not in page
    assert "table1.csv not built yet" in page


def test_report_page_with_a_partial_matrix(tmp_path, m):
    """A matrix slice that feeds only some tables still gives a page (empty tables say so)."""
    from pgd.matrix import Matrix
    from pgd.report import page as P

    part = Matrix([m["atss_r101_teacher"], m["atss_r50_student"]])
    for t in TABLES:   # the paper's eight and the initialisation study (SPECS also holds the extras table)
        T.write_table(t, "mini", [0], tmp_path, matrix=part, allow_missing=True)
    page = P.build_page("mini", [0], tmp_path, part)
    assert page.count("```latex") == len(TABLES)
    assert page.count("*No run of the matrix feeds this table.*") == 3        # t3, t6k, t6a


def test_combine_blocks_equals_one_table_over_all_runs(tmp_path, m):
    """Two result trees that each ran one detector's block of the paper-vs-code table: combining their CSVs gives
    the table computed over both trees' runs at once (gains, stds and significance are per block)."""
    seeds = [0, 1, 2]
    insts = [inst for _, inst in m.cell_instances("tpc", seeds)]
    for i, inst in enumerate(insts):
        block = "atss" if inst.name.startswith("atss") else "fcos"
        for root in (tmp_path / block, tmp_path / "both"):
            put(root, inst.name, **coco(50.0 + (i % 7) * 0.7, 70.0 + i % 3))
    csvs = []
    for block in ("atss", "fcos"):
        _, csv = T.write_table("tpc", "mini", seeds, tmp_path / block, tmp_path / f"t_{block}", m,
                               allow_missing=True)
        csvs.append(str(csv))
    _, whole = T.write_table("tpc", "mini", seeds, tmp_path / "both", tmp_path / "t_both", m)
    assert T.main(["--table", "tpc", "--combine", *csvs, "--out-dir", str(tmp_path / "t_comb")]) == 0
    comb = pd.read_csv(tmp_path / "t_comb" / "table_paper_vs_code.csv")
    pd.testing.assert_frame_equal(comb, pd.read_csv(whole))
    assert (tmp_path / "t_comb" / "table_paper_vs_code.tex").read_text() == \
        (tmp_path / "t_both" / "table_paper_vs_code.tex").read_text()
    # the same block with values in two CSVs is ambiguous; a CSV of another table is refused
    with pytest.raises(T.TableError, match="has values in both"):
        T.combine_blocks("tpc", {"a": pd.read_csv(csvs[0]), "b": pd.read_csv(whole)})
    with pytest.raises(T.TableError, match="not 't1'"):
        T.combine_blocks("t1", {"a": pd.read_csv(csvs[0])})


def test_each_block_is_contiguous_in_the_paper_vs_code_table(tmp_path, m):
    """The matrix lists PGD under the code's normalisation after both detectors' blocks; the table still shows it
    inside its own block (not as a second FCOS block at the bottom), and combining CSVs written in the old, split
    order regroups them."""
    order = T.row_order("tpc", m, T.load_paper_numbers())
    blocks = [b for b, _ in order]
    assert blocks == sorted(blocks, key=blocks.index)               # each block's rows contiguous
    assert [r for b, r in order if b == "FCOS"][-1] == "Official code"
    assert T.blocks_together([("F", 1), ("A", 1), ("A", 2), ("F", 2)]) == [("F", 1), ("F", 2), ("A", 1), ("A", 2)]
    split = pd.DataFrame([{"table": "tpc", "block": b, "row": r, "metric": "AP", "mean": v, "n": n}
                          for b, r, v, n in [("FCOS", "Student", None, 0), ("ATSS", "Student", 58.4, 3),
                                             ("ATSS", "Official code", 64.2, 3), ("FCOS", "Official code", None, 0)]])
    comb = T.combine_blocks("tpc", {"old.csv": split})
    assert list(zip(comb["block"], comb["row"])) == [("FCOS", "Student"), ("FCOS", "Official code"),
                                                     ("ATSS", "Student"), ("ATSS", "Official code")]
