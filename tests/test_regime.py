"""The report's regime checks on hand-made blocks (pgd.report.regime)."""
from __future__ import annotations

import pandas as pd

from pgd.report.regime import block_problems, regime_warnings


def _tidy(rows, metric="AP"):
    return pd.DataFrame([dict(block=b, row=r, metric=metric, mean=m) for b, r, m in rows])


def test_a_block_in_the_regime_has_no_warning():
    # student 40 / teacher 45 = 0.89 (the paper's ATSS ratio), gap 5, control 44 below the teacher
    df = _tidy([("ATSS", "Teacher", 45.0), ("ATSS", "Student", 40.0), ("ATSS", "Inherit only", 44.0),
                ("ATSS", "Ours", 42.0)])
    assert regime_warnings(df, "AP", "t1") == []


def test_each_miss_is_named_with_its_numbers():
    # FCOS of the 1800/600 mini regime: 22.1 / 50.8 = 0.435; the control 54.9 above the teacher
    df = _tidy([("FCOS", "Teacher", 50.8), ("FCOS", "Student", 22.1), ("FCOS", "Inherit only", 54.9)])
    (line,) = regime_warnings(df, "AP", "t1")
    assert line.startswith("**FCOS**: the plain student reaches 0.44 of its teacher's AP (at least 0.70 asked)")
    assert "Inherit only (54.9) reaches the teacher (50.8)" in line
    # a student within 3 AP of its teacher
    assert block_problems(_tidy([("", "Teacher", 45.0), ("", "Student", 43.0)]), "AP", 0.7) == [
        "the teacher is +2.0 AP from its student (at least 3 asked)"]


def test_mobilenet_table_asks_for_055_and_mr_is_lower_is_better():
    df = _tidy([("ATSS", "Teacher", 50.0), ("ATSS", "Student", 30.0)])
    assert regime_warnings(df, "AP", "t2") == []                 # 0.60 >= 0.55
    assert len(regime_warnings(df, "AP", "t1")) == 1             # 0.60 < 0.70
    crowd = _tidy([("", "Teacher", 70.0), ("", "Student", 72.0), ("", "Inherit only", 69.0)], "MR")
    assert block_problems(crowd, "MR", 0.7) == [
        "the teacher is +2.0 MR from its student (at least 3 asked)",
        "Inherit only (69.0) reaches the teacher (70.0): the teacher is no target to distil toward"]


def test_the_control_is_checked_before_the_student_has_run():
    df = _tidy([("ATSS", "Teacher", 58.3), ("ATSS", "Student", float("nan")), ("ATSS", "Inherit only", 58.5)])
    assert regime_warnings(df, "AP", "t1") == [
        "**ATSS**: Inherit only (58.5) reaches the teacher (58.3): the teacher is no target to distil toward."]
    assert regime_warnings(_tidy([("ATSS", "Student", 40.0)]), "AP", "t1") == []    # no teacher: nothing to check
