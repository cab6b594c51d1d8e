"""Does a table block stand in the paper's training regime? The checks the report prints above each table.

The paper's Table 1 is read against a regime: converged teachers, plain students trained to a third of the
teacher's schedule that reach most of their teacher's accuracy (0.87-0.91 there), and a teacher-student gap for a
KD loss to close. A block of ours that misses it cannot show what the paper's shows, whatever its numbers, so the
report says so per block (docs/protocol.md, "Regime"):

* the plain student reaches at least ``STUDENT_FLOOR`` of its teacher's AP (``MBV2_STUDENT_FLOOR`` in the
  MobileNetV2 table);
* the teacher is at least ``MIN_GAP`` above its student (for MR: that much lower);
* the *Inherit only* control stays below the teacher: a student that copies the teacher's neck and head and only
  keeps training reaching the teacher means the teacher is no target to distil toward (it is not converged).

Teacher convergence itself (1.5x the teacher's iterations gain under 1.5 AP) needs the longer teacher:
benchmarks/teacher_convergence.py measures it outside the DAG. Reads the tidy frame `pgd table` writes.
"""
from __future__ import annotations

import math

import pandas as pd

from pgd.report.significance import CONTROL_ROW, LOWER_IS_BETTER

STUDENT_FLOOR = 0.70
MBV2_STUDENT_FLOOR = 0.55
MBV2_TABLES = frozenset({"t2"})
MIN_GAP = 3.0


def block_problems(rows: pd.DataFrame, metric: str, floor: float) -> list[str]:
    """What one block (tidy lines of one metric: row, mean) misses of the regime, as phrases."""
    by = rows.set_index("row")["mean"]
    if "Teacher" not in by.index or math.isnan(by["Teacher"]):
        return []
    t = float(by["Teacher"])
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    out = []
    if "Student" in by.index and not math.isnan(by["Student"]):      # a block whose student has not run yet
        s = float(by["Student"])
        if metric not in LOWER_IS_BETTER and t > 0 and s / t < floor:
            out.append(f"the plain student reaches {s / t:.2f} of its teacher's {metric} (at least {floor:.2f} "
                       "asked)")
        if sign * (t - s) < MIN_GAP:
            out.append(f"the teacher is {sign * (t - s):+.1f} {metric} from its student (at least {MIN_GAP:.0f} "
                       "asked)")
    if CONTROL_ROW in by.index and not math.isnan(by[CONTROL_ROW]) and sign * (by[CONTROL_ROW] - t) >= 0:
        out.append(f"{CONTROL_ROW} ({by[CONTROL_ROW]:.1f}) reaches the teacher ({t:.1f}): the teacher is no target "
                   "to distil toward")
    return out


def regime_warnings(tidy: pd.DataFrame, metric: str, table: str) -> list[str]:
    """One sentence per block that misses the regime (none when every block holds it)."""
    floor = MBV2_STUDENT_FLOOR if table in MBV2_TABLES else STUDENT_FLOOR
    lines = []
    for block, g in tidy[tidy["metric"] == metric].groupby("block", sort=False):
        problems = block_problems(g, metric, floor)
        if problems:
            lines.append(f"{('**' + block + '**') if block else 'This table'}: " + "; ".join(problems) + ".")
    return lines
