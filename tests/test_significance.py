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
    rows = [("ATSS", "Student", 40.0, 2.0, 3), ("ATSS", "Ours", 44.0, 2.0, 3), ("ATSS", "FKD", 41.0, 2.0, 3),
            ("ATSS", "Inherit only", 43.0, float("nan"), 1),
            ("FCOS", "Student", 30.0, float("nan"), 1), ("FCOS", "Ours", 39.0, float("nan"), 1)]
    return pd.DataFrame([dict(block=b, row=r, metric="AP", mean=m, std=s, n=n) for b, r, m, s, n in rows])


def test_pooled_std_weights_rows_by_their_degrees_of_freedom():
    df = pd.DataFrame(dict(mean=[1, 2, 3], std=[1.0, 3.0, float("nan")], n=[2, 4, 1]))
    noise = S.pooled_std(df)
    # (1 * 1^2 + 3 * 3^2) / (1 + 3) = 7
    assert noise.std == pytest.approx(math.sqrt(7.0)) and noise.dof == 4 and noise.rows == 2
    assert not S.pooled_std(df.iloc[2:]).known


def test_two_standard_errors_of_the_difference():
    # 3 vs 3 seeds at std 2: SE = 2 sqrt(2/3) = 1.633, threshold 3.266
    assert S.resolvable(2.0, 3, 3) == pytest.approx(2 * 2 * math.sqrt(2 / 3))
    assert S.significant(4.0, 2.0, 3, 3) and S.significant(-3.3, 2.0, 3, 3)
    assert not S.significant(3.2, 2.0, 3, 3)
    # a single run against a 3-seed row: SE = 2 sqrt(4/3) = 2.309, threshold 4.619
    assert not S.significant(4.5, 2.0, 1, 3) and S.significant(4.7, 2.0, 1, 3)
    assert not S.significant(100.0, float("nan"), 1, 1)


def test_marks_against_the_baseline_row():
    marked = S.mark_against(hand_table(), "Student").set_index(["block", "row"])["sig"]
    assert marked[("ATSS", "Ours")] and not marked[("ATSS", "FKD")]
    assert not marked[("ATSS", "Inherit only")]      # +3.0 < 4.62 for a single run against 3 seeds
    assert not marked[("ATSS", "Student")]
    assert not marked[("FCOS", "Ours")]              # +9 but the block has no seed estimate


def test_orderings_say_which_hold_in_words():
    lines = S.orderings(hand_table(), "AP")
    atss, fcos = lines
    assert atss.startswith("**ATSS** (AP): seed std 2.00 (pooled over 3 rows, 6 d.o.f.)")
    assert "resolved beyond 3.3 between two 3-seed rows, 4.6 between a single run and a 3-seed row" in atss
    assert "Above Student: Ours (+4.0)" in atss
    assert "not resolved from it: FKD (+1.0), Inherit only (+3.0)" in atss
    # against the control: Ours +1.0 and FKD -2.0 are both within 4.6
    assert "None above Inherit only; not resolved from it: Ours (+1.0), FKD (-2.0)" in atss
    assert fcos.startswith("**FCOS** (AP): every cell is a single run (n = 1)")


def test_mr_lower_is_better():
    df = hand_table().assign(metric="MR")
    df.loc[df.row == "Ours", "mean"] = 35.0           # 5 below the student's 40: an improvement in MR
    assert "Above Student: Ours (-5.0)" in S.orderings(df, "MR")[0]


def test_table_cells_carry_the_mark_and_n():
    df = hand_table().assign(table="t1", gain=float("nan"), paper=float("nan"), paper_gain=float("nan"),
                             runs="", stale=False)
    df["gain"] = [float("nan"), 4.0, 1.0, 3.0, float("nan"), 9.0]
    df = S.mark_against(df, "Student")
    one = df[df.metric == "AP"]
    frame = T.cell_frame("t1", pd.concat([one.assign(metric=m) for m in T.COCO_METRICS]), "ours", latex=False)
    assert frame.loc[("ATSS", "Ours"), "AP"] == "44.0±2.0 (+4.0*)"
    assert frame.loc[("ATSS", "FKD"), "AP"] == "41.0±2.0 (+1.0)"
    assert frame.loc[("FCOS", "Ours"), "AP"] == "39.0 (+9.0)"
    assert list(frame["n"]) == ["3", "3", "3", "1", "1", "1"]
