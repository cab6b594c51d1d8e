"""A table's shape beside the paper's: student/teacher ratio, gap closed per method, rank agreement.

Absolute numbers on the synthetic data cannot be the paper's; its shape can be compared. Per block of a table
with Teacher and Student rows (the tidy frame `pgd table` writes, ours beside the paper's):

* **student / teacher**: the plain student's metric over the teacher's (the regime: how far from its teacher a
  student is trained);
* **gap closed** by each method row: (row - Student) / (Teacher - Student), ours and the paper's;
* **Kendall tau** of the block's method rows ordered by our mean against their order by the paper's value (rows
  both have; Teacher, Student and the control, which the paper lacks, excluded), with its n. tau is 1 for the same
  order, -1 for the reverse; with n rows one swap of neighbours moves it by 4 / (n (n - 1)).

For MR (lower is better) the gap is computed on -MR, so a positive fraction is always an improvement.
"""
from __future__ import annotations

import math

import pandas as pd

from pgd.report.significance import CONTROL_ROW, LOWER_IS_BETTER

REFERENCE_ROWS = ("Teacher", "Student", "S & T", CONTROL_ROW)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two paired lists (NaN with fewer than two pairs or a constant list)."""
    from scipy.stats import kendalltau

    if len(a) < 2:
        return float("nan")
    tau = kendalltau(a, b).statistic
    return float(tau) if tau is not None else float("nan")


def block_shape(rows: pd.DataFrame, metric: str) -> dict:
    """``rows``: one block's tidy lines of one metric (row, mean, paper). Ratio, gaps and tau."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    by = rows.set_index("row")
    out = dict(ratio=float("nan"), paper_ratio=float("nan"), tau=float("nan"), n=0, gaps={})
    if not {"Teacher", "Student"} <= set(by.index):
        return out
    t, s = by.loc["Teacher"], by.loc["Student"]
    if metric not in LOWER_IS_BETTER:
        out["ratio"], out["paper_ratio"] = s["mean"] / t["mean"], s["paper"] / t["paper"]
    methods = [r for r in by.index if r not in REFERENCE_ROWS]
    for r in methods + ([CONTROL_ROW] if CONTROL_ROW in by.index else []):
        ours = sign * (by.loc[r, "mean"] - s["mean"]) / (sign * (t["mean"] - s["mean"]))
        paper = sign * (by.loc[r, "paper"] - s["paper"]) / (sign * (t["paper"] - s["paper"]))
        out["gaps"][r] = (ours, paper)
    both = [r for r in methods if not math.isnan(by.loc[r, "mean"]) and not math.isnan(by.loc[r, "paper"])]
    out["n"] = len(both)
    out["tau"] = kendall_tau([by.loc[r, "mean"] for r in both], [by.loc[r, "paper"] for r in both])
    return out


def table_shape(tidy: pd.DataFrame, metric: str) -> list[tuple[str, dict]]:
    lines = tidy[tidy["metric"] == metric]
    return [(block, block_shape(g, metric)) for block, g in lines.groupby("block", sort=False)]


def _pct(x: float) -> str:
    return "--" if math.isnan(x) else f"{x:.2f}"


def shape_markdown(tidy: pd.DataFrame, metric: str) -> str:
    """A markdown table: one line per block (ratio ours / paper, tau and n, each method's gap closed)."""
    shapes = [(b, s) for b, s in table_shape(tidy, metric) if s["gaps"] or not math.isnan(s["ratio"])]
    if not shapes:
        return "*No block with Teacher and Student rows.*"
    recs = []
    for block, s in shapes:
        rec = {"block": block or "-", "student/teacher (ours / paper)": f"{_pct(s['ratio'])} / {_pct(s['paper_ratio'])}",
               "Kendall tau (n)": f"{_pct(s['tau'])} ({s['n']})"}
        rec["gap closed, ours / paper"] = ", ".join(f"{r} {_pct(o)} / {_pct(p)}" for r, (o, p) in s["gaps"].items())
        recs.append(rec)
    return pd.DataFrame(recs).to_markdown(index=False)
