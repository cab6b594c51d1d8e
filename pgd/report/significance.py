"""Seed noise of a table block and which differences it resolves.

A block's seed std is pooled over its rows trained at several seeds (sample variances weighted by their degrees
of freedom): the spread a cell would show if it were rerun with another seed. A difference between two rows of a
block counts as significant only beyond ``t * s * sqrt(1/n_a + 1/n_b)``: ``s`` the block's pooled std, ``n`` each
row's seed count and ``t`` Student's two-sided 95 % quantile at the pooled std's degrees of freedom - about two
standard errors when many seeds back the std, more when few do (4.3 at 2 d.o.f.: one row of 3 seeds). A block
with no row trained at two or more seeds has no estimate, and none of its differences is called significant.

Every function reads the tidy frame `pgd table` writes (columns block, row, metric, mean, std, n).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

CONFIDENCE = 0.95                              # two-sided
LOWER_IS_BETTER = frozenset({"MR"})
CONTROL_ROW = "Inherit only"


@dataclass(frozen=True)
class Noise:
    std: float          # pooled seed std (NaN: no replicated row)
    dof: int            # its degrees of freedom: sum of (n - 1) over the replicated rows
    rows: int           # replicated rows it pools

    @property
    def known(self) -> bool:
        return self.dof > 0 and not math.isnan(self.std)


def pooled_std(cells: pd.DataFrame) -> Noise:
    """Pooled sample std of one block and metric: rows with n >= 2 and a finite std."""
    rep = cells[(cells["n"] >= 2) & cells["std"].notna()]
    dof = int((rep["n"] - 1).sum())
    if dof == 0:
        return Noise(float("nan"), 0, 0)
    var = float(((rep["n"] - 1) * rep["std"] ** 2).sum()) / dof
    return Noise(math.sqrt(var), dof, len(rep))


def standard_error(std: float, n_a: int, n_b: int) -> float:
    return std * math.sqrt(1.0 / n_a + 1.0 / n_b)


def critical_value(dof: int) -> float:
    """Student's t quantile of a two-sided test at CONFIDENCE with ``dof`` degrees of freedom."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))


def resolvable(std: float, n_a: int, n_b: int, dof: int) -> float:
    """The smallest difference of means called significant between rows of n_a and n_b seeds, when the std
    was estimated with ``dof`` degrees of freedom."""
    return critical_value(dof) * standard_error(std, n_a, n_b)


def significant(diff: float, std: float, n_a: int, n_b: int, dof: int) -> bool:
    if any(math.isnan(x) for x in (diff, std)) or n_a < 1 or n_b < 1 or dof < 1:
        return False
    return abs(diff) > resolvable(std, n_a, n_b, dof)


def block_noise(tidy: pd.DataFrame) -> dict[tuple[str, str], Noise]:
    """(block, metric) -> the block's pooled seed noise for that metric."""
    ours = tidy[tidy["mean"].notna()]
    return {key: pooled_std(g) for key, g in ours.groupby(["block", "metric"], sort=False)}


def mark_against(tidy: pd.DataFrame, baseline: str, column: str = "sig") -> pd.DataFrame:
    """``tidy`` with a boolean column: the row improves on the block's ``baseline`` row significantly (higher,
    or lower for MR). A significant loss is not marked here; :func:`orderings` names it in words."""
    noise = block_noise(tidy)
    base = tidy[tidy["row"] == baseline].set_index(["block", "metric"])[["mean", "n"]]
    flags = []
    for r in tidy.itertuples(index=False):
        key = (r.block, r.metric)
        if r.row == baseline or key not in base.index or math.isnan(r.mean) or key not in noise:
            flags.append(False)
            continue
        b = base.loc[key]
        diff = r.mean - b["mean"]
        gain = -diff if r.metric in LOWER_IS_BETTER else diff
        flags.append(gain > 0 and significant(diff, noise[key].std, int(r.n), int(b["n"]), noise[key].dof))
    out = tidy.copy()
    out[column] = flags
    return out


def orderings(tidy: pd.DataFrame, metric: str, references: tuple[str, ...] = ("Student", CONTROL_ROW)
              ) -> list[str]:
    """Sentences, one per block: its seed std, the smallest difference it resolves, and for every row against
    each reference row present, whether it is better, worse or not resolved from it (module docstring)."""
    lines = []
    noise = block_noise(tidy)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    for block, g in tidy[(tidy["metric"] == metric) & tidy["mean"].notna()].groupby("block", sort=False):
        where = f"**{block}**" if block else "This table"
        nz = noise.get((block, metric), Noise(float("nan"), 0, 0))
        ns = sorted(set(int(n) for n in g["n"]))
        if not nz.known:
            lines.append(f"{where} ({metric}): every cell is a single run (n = {ns[-1]}); no seed std can be "
                         "estimated, so no difference in it is claimed.")
            continue
        n_max = max(ns)
        head = (f"{where} ({metric}): seed std {nz.std:.2f} (pooled over {nz.rows} rows, {nz.dof} d.o.f.); "
                f"a difference is resolved beyond {resolvable(nz.std, n_max, n_max, nz.dof):.1f} between two "
                f"{n_max}-seed rows")
        if 1 in ns:
            head += f", {resolvable(nz.std, 1, n_max, nz.dof):.1f} between a single run and a {n_max}-seed row"
        parts = []
        rows = g.set_index("row")
        for ref in references:
            if ref not in rows.index:
                continue
            better, worse, unresolved = [], [], []
            for row, r in rows.iterrows():
                if row in (ref, "Teacher") or row in references and references.index(row) < references.index(ref):
                    continue
                diff = r["mean"] - rows.loc[ref, "mean"]
                label = f"{row} ({diff:+.1f})"
                if significant(diff, nz.std, int(r["n"]), int(rows.loc[ref, "n"]), nz.dof):
                    (better if sign * diff > 0 else worse).append(label)
                else:
                    unresolved.append(label)
            clause = [f"above {ref}: {', '.join(better)}" if better else f"none above {ref}"]
            if worse:
                clause.append(f"below it: {', '.join(worse)}")
            if unresolved:
                clause.append(f"not resolved from it: {', '.join(unresolved)}")
            parts.append("; ".join(clause))
        lines.append(head + (". " + ". ".join(p[0].upper() + p[1:] for p in parts) + "." if parts else "."))
    return lines
