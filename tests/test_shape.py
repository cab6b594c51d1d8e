"""The tables' shape beside the paper's (pgd.report.shape) on hand-made numbers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pgd.report import shape as S


def block(rows):
    return pd.DataFrame([dict(block="ATSS", row=r, metric="AP", mean=m, paper=p) for r, m, p in rows])


ROWS = [("Teacher", 60.0, 45.5), ("Student", 40.0, 39.6), ("Inherit only", 55.0, float("nan")),
        ("FKD", 50.0, 41.1), ("FGD", 45.0, 42.2), ("Ours", 58.0, 44.2)]


def test_ratio_and_gap_closed():
    s = S.block_shape(block(ROWS), "AP")
    assert s["ratio"] == pytest.approx(40 / 60) and s["paper_ratio"] == pytest.approx(39.6 / 45.5)
    ours, paper = s["gaps"]["Ours"]
    assert ours == pytest.approx(18 / 20) and paper == pytest.approx(4.6 / 5.9)
    assert s["gaps"]["Inherit only"][0] == pytest.approx(0.75) and math.isnan(s["gaps"]["Inherit only"][1])


def test_kendall_tau_over_the_method_rows_only():
    s = S.block_shape(block(ROWS), "AP")
    # ours FKD > FGD, the paper FGD > FKD; Ours first in both: pairs (FKD,FGD) discordant, two concordant
    assert s["n"] == 3 and s["tau"] == pytest.approx(1 / 3)
    same = S.block_shape(block([r if r[0] != "FKD" else ("FKD", 43.0, 41.1) for r in ROWS]), "AP")
    assert same["tau"] == pytest.approx(1.0)
    assert S.kendall_tau([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(S.kendall_tau([1.0], [1.0]))


def test_mr_gap_is_an_improvement_when_positive():
    df = pd.DataFrame([dict(block="", row=r, metric="MR", mean=m, paper=p)
                       for r, m, p in [("Teacher", 41.4, 41.4), ("Student", 46.0, 46.0), ("Ours", 43.0, 42.8)]])
    s = S.block_shape(df, "MR")
    assert s["gaps"]["Ours"][0] == pytest.approx(3.0 / 4.6) and s["gaps"]["Ours"][1] == pytest.approx(3.2 / 4.6)
    assert math.isnan(s["ratio"])


def test_markdown_names_every_block():
    text = S.shape_markdown(block(ROWS), "AP")
    assert "| ATSS " in text and "0.67 / 0.87" in text and "0.33 (3)" in text and "Ours 0.90 / 0.78" in text
