"""Significance marks on a hand-made table with known means and stds (pgd.report.significance)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pgd.report import significance as S
from pgd.report import tables as T


def hand_table() -> pd.DataFrame:
    """Block ATSS: three 3-seed rows of std 2 (pooled std 2, 6 d.o.f.) and a single-seed control;
    block FCOS: single runs only."""
    rows = [("ATSS", "Student", 40.0, 2.0, 3), ("ATSS", "Ours", 44.5, 2.0, 3), ("ATSS", "FKD", 41.0, 2.0, 3),
            ("ATSS", "Inherit only", 43.0, float("nan"), 1),
            ("FCOS", "Student", 30.0, float("nan"), 1), ("FCOS", "Ours", 39.0, float("nan"), 1)]
    return pd.DataFrame([dict(block=b, row=r, metric="AP", mean=m, std=s, n=n) for b, r, m, s, n in rows])


def test_pooled_std_weights_rows_by_their_degrees_of_freedom():
    df = pd.DataFrame(dict(mean=[1, 2, 3], std=[1.0, 3.0, float("nan")], n=[2, 4, 1]))
    noise = S.pooled_std(df)
    # (1 * 1^2 + 3 * 3^2) / (1 + 3) = 7
    assert noise.std == pytest.approx(math.sqrt(7.0)) and noise.dof == 4 and noise.rows == 2
    assert not S.pooled_std(df.iloc[2:]).known


def test_t_quantile_standard_errors_of_the_difference():
    # Student's t, two-sided 95 %: 12.706 at 1 d.o.f., 4.303 at 2, 2.447 at 6, -> 1.960
    assert S.critical_value(1) == pytest.approx(12.706, abs=1e-3)
    assert S.critical_value(2) == pytest.approx(4.303, abs=1e-3)
    assert S.critical_value(6) == pytest.approx(2.447, abs=1e-3)
    assert S.critical_value(10 ** 6) == pytest.approx(1.960, abs=1e-3)
    # 3 vs 3 seeds at std 2 (6 d.o.f.): SE = 2 sqrt(2/3) = 1.633, threshold 2.447 * 1.633 = 3.996
    assert S.resolvable(2.0, 3, 3, 6) == pytest.approx(2.4469 * 2 * math.sqrt(2 / 3), abs=1e-3)
    assert S.significant(4.1, 2.0, 3, 3, 6) and S.significant(-4.1, 2.0, 3, 3, 6)
    assert not S.significant(3.9, 2.0, 3, 3, 6)
    # the same std from one 3-seed row only (2 d.o.f.): threshold 4.303 * 1.633 = 7.03
    assert not S.significant(7.0, 2.0, 3, 3, 2) and S.significant(7.1, 2.0, 3, 3, 2)
    # a single run against a 3-seed row at 6 d.o.f.: SE = 2 sqrt(4/3) = 2.309, threshold 5.651
    assert not S.significant(5.6, 2.0, 1, 3, 6) and S.significant(5.7, 2.0, 1, 3, 6)
    assert not S.significant(100.0, float("nan"), 1, 1, 1) and not S.significant(100.0, 1.0, 3, 3, 0)


def test_marks_against_the_baseline_row():
    marked = S.mark_against(hand_table(), "Student").set_index(["block", "row"])["sig"]
    assert marked[("ATSS", "Ours")] and not marked[("ATSS", "FKD")]      # +4.5 > 3.996; +1.0 not
    assert not marked[("ATSS", "Inherit only")]      # +3.0 < 5.65 for a single run against 3 seeds
    assert not marked[("ATSS", "Student")]
    assert not marked[("FCOS", "Ours")]              # +9 but the block has no seed estimate


def test_a_significant_loss_is_not_marked_as_a_gain():
    df = hand_table()
    df.loc[df.row == "FKD", "mean"] = 35.0            # 5 below the student: significant, but a loss
    marked = S.mark_against(df, "Student").set_index(["block", "row"])["sig"]
    assert not marked[("ATSS", "FKD")]
    assert "below it: FKD (-5.0)" in S.orderings(df, "AP")[0]


def test_orderings_say_which_hold_in_words():
    lines = S.orderings(hand_table(), "AP")
    atss, fcos = lines
    assert atss.startswith("**ATSS** (AP): seed std 2.00 (pooled over 3 rows, 6 d.o.f.)")
    assert "resolved beyond 4.0 between two 3-seed rows, 5.7 between a single run and a 3-seed row" in atss
    assert "Above Student: Ours (+4.5)" in atss
    assert "not resolved from it: FKD (+1.0), Inherit only (+3.0)" in atss
    # against the control: Ours +1.5 and FKD -2.0 are both within 5.65
    assert "None above Inherit only; not resolved from it: Ours (+1.5), FKD (-2.0)" in atss
    assert fcos.startswith("**FCOS** (AP): every cell is a single run (n = 1)")


def test_orderings_against_another_baseline_row():
    df = hand_table().replace({"row": {"Student": "S & T"}})
    assert "Above S & T: Ours (+4.5)" in S.orderings(df, "AP", ("S & T", S.CONTROL_ROW))[0]


def test_mr_lower_is_better():
    df = hand_table().assign(metric="MR")
    df.loc[df.row == "Ours", "mean"] = 35.0           # 5 below the student's 40: an improvement in MR
    assert "Above Student: Ours (-5.0)" in S.orderings(df, "MR")[0]
    assert S.mark_against(df, "Student").set_index(["block", "row"])["sig"][("ATSS", "Ours")]


def test_table_cells_carry_the_mark_and_n():
    df = hand_table().assign(table="t1", gain=float("nan"), paper=float("nan"), paper_gain=float("nan"),
                             runs="", stale=False)
    df["gain"] = [float("nan"), 4.5, 1.0, 3.0, float("nan"), 9.0]
    df = S.mark_against(df, "Student")
    one = df[df.metric == "AP"]
    frame = T.cell_frame("t1", pd.concat([one.assign(metric=m) for m in T.COCO_METRICS]), "ours", latex=False)
    assert frame.loc[("ATSS", "Ours"), "AP"] == "44.5±2.0 (+4.5*)"
    assert frame.loc[("ATSS", "FKD"), "AP"] == "41.0±2.0 (+1.0)"
    assert frame.loc[("FCOS", "Ours"), "AP"] == "39.0 (+9.0)"
    assert list(frame["n"]) == ["3", "3", "3", "1", "1", "1"]


def test_paper_vs_code_table_resolves_code_against_paper_equations():
    # four 3-seed rows of std 0.3: pooled 0.3 at 8 d.o.f., t 2.306, standard error 0.3 * sqrt(2/3) = 0.245,
    # so a difference counts beyond 0.565
    def table(code: float) -> pd.DataFrame:
        rows = [("Student", 58.4), ("Paper equations", 64.0), ("Inherit only", 66.0), ("Official code", code)]
        return pd.DataFrame([dict(block="ATSS", row=r, metric="AP", mean=m, std=0.3, n=3) for r, m in rows])

    refs = T.SPECS["tpc"].references
    assert refs == ("Student", S.CONTROL_ROW, "Paper equations")
    line = S.orderings(table(64.2), "AP", refs)[0]
    assert "resolved beyond 0.6 between two 3-seed rows" in line
    assert line.endswith("None above Paper equations; not resolved from it: Official code (+0.2).")
    assert "Above Paper equations: Official code (+1.5)." in S.orderings(table(65.5), "AP", refs)[0]
    assert T.SPECS["t1"].references == ("Student", S.CONTROL_ROW)
