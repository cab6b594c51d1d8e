"""`pgd table`: the paper's Tables 1-7 from the runs' metrics.json, as LaTeX (pandas Styler, booktabs) and CSV.

Each `<stem>.tex` holds two `table` floats in the paper's layout: ours (label `tab:<stem>`) and, as a companion
below it, the paper's own reported numbers (label `tab:<stem>-paper`, from paper_numbers.csv). The `<stem>.csv`
beside it is tidy (one line per cell x metric) with both, plus the seed count, the std and the runs behind each cell.

Conventions, as in the paper: one decimal; gains over the block's baseline row (Student, or "S & T" for the
self-distillation table) in parentheses, computed from the displayed (rounded) values; MR's gain keeps its sign
(lower is better, so an improvement reads "(-1.7)"). With several seeds a cell shows mean +- sample std.

The LaTeX pastes into a plain article with the packages of PREAMBLE (also written as `tables/preamble.tex`):
booktabs rules, no \\multirow (a block's detector is named on its first line, as the paper prints it), and a
table wider than the text is scaled down to \\linewidth. The paper's companion carries footnotes where its
printed gain differs from its own values (paper_printed_gains.csv) and where it prints a row identical to another
row of the same block.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pgd.atomic import atomic_write_text
from pgd.errors import UserError
from pgd.matrix import (ALL_TABLES, EXTRA_TABLE, TABLES, Matrix, check_seeds, load_matrix, run_dir,
                        with_extras)
from pgd.provenance import Settings, StaleRunsError, check_stale
from pgd.report.significance import CONTROL_ROW, mark_against

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.csv")
PRINTED_GAINS = Path(__file__).with_name("paper_printed_gains.csv")
PACKAGES = ("booktabs", "graphicx", "amssymb")
PREAMBLE = ("% Packages the tables written by `pgd table` need: put these lines (or \\input{preamble}) before"
            " \\begin{document}.\n"
            "\\usepackage{booktabs}  % \\toprule, \\midrule, \\bottomrule\n"
            "\\usepackage{graphicx}  % \\resizebox: a table wider than the text is scaled to \\linewidth\n"
            "\\usepackage{amssymb}   % \\checkmark (Table 7)\n")
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
CROWD_METRICS = ("MR", "AP", "JI")
METRIC_LATEX = {"AP": "AP", "AP50": "AP$_{50}$", "AP75": "AP$_{75}$", "APs": "AP$_S$", "APm": "AP$_M$",
                "APl": "AP$_L$", "MR": r"MR $\downarrow$", "JI": r"JI $\uparrow$"}
METRIC_MD = {"AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APl": "APl", "MR": "MR (lower is better)"}
CHECK = r"$\checkmark$"
# a cell whose runs were computed with another configuration than the current one (`--allow-stale`)
STALE_LATEX, STALE_MD = r"$^{\dagger}$", " †"
# a significant gain over the block's baseline row (pgd.report.significance: a two-sided 95 % t test on the pooled seed std)
SIG_LATEX, SIG_MD = r"$^{*}$", "*"
SIG_NOTE = ("n: seeds per row; $\\pm$: sample std over them; $^{*}$: a gain beyond $t_{0.975}$ standard errors of "
            "the block's pooled seed std (no mark where the block has no row at two or more seeds).")


class TableError(UserError, ValueError):
    """Missing or malformed metrics, or an unknown table."""


@dataclass(frozen=True)
class TableSpec:
    caption: str
    metrics: tuple[str, ...]
    baseline: str | None = None          # row the gains are measured against, per block
    wide: str | None = None              # t6: the header of the swept value (rows become columns)
    branches: bool = False               # t7: neck / cls / reg check-mark columns
    compare: tuple[str, ...] = ()        # further rows the report resolves every other row against

    @property
    def references(self) -> tuple[str, ...]:
        """The rows the report's seed orderings resolve each row against (pgd.report.significance.orderings)."""
        return (self.baseline or "Student", CONTROL_ROW, *self.compare)


SPECS: dict[str, TableSpec] = {
    "t1": TableSpec("Comparison with state-of-the-art distillation methods (R101 teachers, R50 students), COCO.",
                    COCO_METRICS, baseline="Student"),
    "t1i": TableSpec("Student initialisation: Table 1's KD methods as the profile starts them (rows without a "
                     "suffix; mini: the teacher's neck and head copied in) and without inheriting (\\emph{no "
                     "inherit}: neck and head from their random init), R101 teachers, R50 students, COCO.",
                     COCO_METRICS, baseline="Student"),
    "t2": TableSpec("Distillation to a MobileNetV2 student backbone, COCO.", COCO_METRICS, baseline="Student"),
    "t3": TableSpec("Distillation methods on CrowdHuman with DDOD.", CROWD_METRICS, baseline="Student"),
    "t4": TableSpec("Self-distillation (R50 teacher and student, both 1x), COCO.", COCO_METRICS, baseline="S & T"),
    "t5": TableSpec("Foreground distillation strategies with ATSS, COCO.", COCO_METRICS, baseline="Student"),
    "t6k": TableSpec("K of the top-K operation with ATSS (AP), COCO.", ("AP",), wide="K"),
    "t6a": TableSpec(r"Distillation loss magnitude $\alpha$ ($\beta=\alpha/2$, $\gamma=1.6\alpha$; AP), COCO.",
                     ("AP",), wide=r"$\alpha$"),
    "t7": TableSpec("Distillation branches with ATSS, COCO.", COCO_METRICS, baseline="Student", branches=True),
    "tpc": TableSpec("PGD under the paper's Eqs. 5-9 (\\emph{Paper equations}: the profile's preset) and under the "
                     "official code's normalisation (\\emph{Official code}: preset code), R101 teachers, R50 "
                     "students, COCO.", COCO_METRICS, baseline="Student", compare=("Paper equations",)),
    # not a paper table: the methods no matrix row uses (pgd.matrix.with_extras, the `extras` target)
    EXTRA_TABLE: TableSpec("KD methods beyond the paper's tables (R101 teacher, R50 student), COCO.", COCO_METRICS,
                           baseline="Student"),
}
# Table 7's rows -> which of (neck, cls, reg) carries a KD loss.
BRANCH_ROWS = {"Student": (0, 0, 0), "Neck": (1, 0, 0), "Cls": (0, 1, 0), "Reg": (0, 0, 1), "Cls + Reg": (0, 1, 1)}


# ------------------------------------------------------------------------------------------ inputs

def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    df = pd.read_csv(path, comment="#", dtype={"table": str, "block": str, "row": str, "metric": str})
    df["block"] = df["block"].fillna("")
    missing = {"table", "block", "row", "metric", "value"} - set(df.columns)
    if missing:
        raise TableError(f"{path}: missing column(s) {sorted(missing)}")
    dup = df.duplicated(["table", "block", "row", "metric"])
    if dup.any():
        raise TableError(f"{path}: duplicate entries {df[dup].head(3).to_dict('records')}")
    return df


def read_metrics(path: Path, metrics: tuple[str, ...]) -> dict[str, float]:
    if not path.is_file():
        raise TableError(f"{path}: metrics.json not found (has the run been trained and evaluated?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: not valid JSON ({e})") from None
    # null is a defined "no value" (e.g. APl on a val set without large objects): shown as --
    missing = [m for m in metrics if m not in data or not (data[m] is None or isinstance(data[m], (int, float)))]
    if missing:
        raise TableError(f"{path}: missing or non-numeric metric(s) {missing}")
    return {m: float("nan") if data[m] is None else float(data[m]) for m in metrics}


def collect_metrics(matrix: Matrix, table: str, profile: str, seeds: list[int], results: str | Path,
                    allow_missing: bool = False, stale: Collection[str] = ()) -> pd.DataFrame:
    """Long frame (block, row, run, seed, metric, value, stale) of every cell instance of a table; ``stale``: run
    names whose metrics come from another configuration (pgd.provenance), marked in the table."""
    spec = spec_of(table)
    records = []
    for cell, inst in matrix.cell_instances(table, seeds):
        path = run_dir(profile, inst.run.id, inst.seed, results) / "metrics.json"
        try:
            values = read_metrics(path, spec.metrics)
        except TableError:
            if allow_missing:
                continue
            raise
        records += [dict(block=cell.block or "", row=cell.row, run=inst.name, seed=inst.seed, metric=m, value=v,
                         stale=inst.name in stale) for m, v in values.items()]
    return pd.DataFrame.from_records(records, columns=["block", "row", "run", "seed", "metric", "value", "stale"])


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (NaN for one seed), count and run names per (block, row, metric)."""
    g = long.groupby(["block", "row", "metric"], sort=False)
    out = g["value"].agg(mean="mean", std="std", n="count")
    out["runs"] = g["run"].agg(lambda s: " ".join(sorted(set(s))))
    out["stale"] = g["stale"].any() if "stale" in long else False
    return out.reset_index()


def spec_of(table: str) -> TableSpec:
    if table not in SPECS:
        raise TableError(f"unknown table {table!r}; known: {', '.join(SPECS)}")
    return SPECS[table]


# ------------------------------------------------------------------------------------------ layout

def blocks_together(keys: list[tuple]) -> list[tuple]:
    """Keys (block, ...) regrouped so each block's lines are contiguous, blocks in order of first appearance and
    lines within a block kept in order: a row the matrix defines later (e.g. PGD under the code's normalisation,
    listed after both detectors' blocks) joins its block instead of opening a second one."""
    first: dict = {}
    for k in keys:
        first.setdefault(k[0], len(first))
    return sorted(keys, key=lambda k: first[k[0]])


def row_order(table: str, matrix: Matrix, paper: pd.DataFrame) -> list[tuple[str, str]]:
    """(block, row) in the paper's order; cells the paper lacks follow in matrix order, within their block."""
    order = list(dict.fromkeys(zip(*paper.loc[paper["table"] == table, ["block", "row"]].values.T)))
    for r in matrix.runs_for_table(table):
        for c in r.cells:
            key = (c.block or "", c.row)
            if c.table == table and key not in order:
                order.append(key)
    return blocks_together(order)


def tidy(table: str, ours: pd.DataFrame, paper: pd.DataFrame, order: list[tuple[str, str]]) -> pd.DataFrame:
    """One line per (block, row, metric): ours (mean, std, n, gain) and the paper's (value, gain)."""
    spec = spec_of(table)
    idx = pd.MultiIndex.from_tuples([(b, r, m) for b, r in order for m in spec.metrics],
                                    names=["block", "row", "metric"])
    df = pd.DataFrame(index=idx)
    df = df.join(ours.set_index(["block", "row", "metric"])).join(
        paper.loc[paper["table"] == table].set_index(["block", "row", "metric"])["value"].rename("paper"))
    df["n"] = df["n"].fillna(0).astype(int)
    for col, src in (("gain", "mean"), ("paper_gain", "paper")):
        df[col] = _gains(df[src], spec) if spec.baseline else float("nan")
    df = df.reset_index()
    df.insert(0, "table", table)
    df["stale"] = df["stale"].astype("boolean").fillna(False).astype(bool) if "stale" in df else False
    df = mark_against(df, spec.baseline) if spec.baseline else df.assign(sig=False)
    return df[["table", "block", "row", "metric", "mean", "std", "n", "gain", "sig", "paper", "paper_gain", "runs",
               "stale"]]


def _gains(values: pd.Series, spec: TableSpec) -> pd.Series:
    """Displayed value minus the block's displayed baseline value (baseline rows and the teacher get none)."""
    shown = values.round(1)
    if spec.baseline not in shown.index.get_level_values("row"):   # a table without its baseline row yet
        return pd.Series(float("nan"), index=values.index)
    base = shown.xs(spec.baseline, level="row").rename("base")
    joined = shown.to_frame("v").join(base, on=["block", "metric"])
    gain = (joined["v"] - joined["base"]).round(1)
    rows = gain.index.get_level_values("row")
    return gain.where(~rows.isin([spec.baseline, "Teacher"]))


def fmt_value(mean: float, std: float = float("nan"), gain: float = float("nan"), latex: bool = True,
              sig: bool = False) -> str:
    """``mean±std (gain)``; ``sig`` marks a significant gain (pgd.report.significance)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "--"
    s = f"{mean:.1f}"
    if std is not None and not math.isnan(std):
        s += (r"$\pm$" if latex else "±") + f"{std:.1f}"
    if gain is not None and not math.isnan(gain):
        s += f" ({gain:+.1f}" + ((SIG_LATEX if latex else SIG_MD) if sig else "") + ")"
    return s


def load_printed_gains(path: str | Path = PRINTED_GAINS) -> pd.DataFrame:
    df = pd.read_csv(path, comment="#", dtype={"table": str, "block": str, "row": str, "metric": str})
    df["block"] = df["block"].fillna("")
    return df


def paper_notes(table: str, tidy_df: pd.DataFrame, printed: pd.DataFrame | None = None
                ) -> list[tuple[tuple[str, str, str], str]]:
    """Footnotes on the paper's companion table: ((block, row, metric) marked, text), in table order.

    Two kinds: a printed gain that differs from the one the paper's own values give (listed in
    paper_printed_gains.csv; the table shows the recomputed one), and a row the paper prints identical, metric for
    metric, to an earlier row of its block (only for tables with several metrics; marked on its first metric)."""
    spec = spec_of(table)
    printed = load_printed_gains() if printed is None else printed
    df = tidy_df.set_index(["block", "row", "metric"])
    notes = []
    for p in printed[printed["table"] == table].itertuples():
        key = (p.block, p.row, p.metric)
        if key in df.index and not math.isnan(df.loc[key, "paper_gain"]):
            notes.append((key, f"The paper prints {p.printed:+.1f} here; its own values give "
                               f"{df.loc[key, 'paper_gain']:+.1f}."))
    if len(spec.metrics) > 2:
        values = tidy_df.pivot_table(index=["block", "row"], columns="metric", values="paper", sort=False)
        for block, rows in values.groupby(level="block", sort=False):
            seen: dict[tuple, str] = {}
            for (_, row), vals in rows.iterrows():
                sig = tuple(vals[list(spec.metrics)])
                if any(map(math.isnan, sig)):
                    continue
                if sig in seen:
                    notes.append(((block, row, spec.metrics[0]),
                                  f"The paper prints this {row} row identical to its {seen[sig]} row "
                                  f"({block or table}), probably a copy error; shown as printed."))
                else:
                    seen[sig] = row
    order = {k: i for i, k in enumerate(zip(tidy_df["block"], tidy_df["row"], tidy_df["metric"]))}
    return sorted(notes, key=lambda n: order[n[0]])


def note_mark(i: int, latex: bool = True) -> str:
    letter = "abcdefghijklmnopqrstuvwxyz"[i]
    return f"$^{{{letter}}}$" if latex else f" [{letter}]"


def cell_frame(table: str, tidy_df: pd.DataFrame, source: str, latex: bool = True) -> pd.DataFrame:
    """The displayed table (strings) for `source` 'ours' or 'paper', in the paper's layout; the paper's cells
    carry the marks of paper_notes."""
    spec = spec_of(table)
    df = tidy_df.copy()
    if source == "ours":
        stale = df["stale"] if "stale" in df else [False] * len(df)
        sig = df["sig"] if "sig" in df else [False] * len(df)
        df["text"] = [fmt_value(m, s, g, latex, bool(sg)) + ((STALE_LATEX if latex else STALE_MD) if st else "")
                      for m, s, g, sg, st in zip(df["mean"], df["std"], df["gain"], sig, stale)]
        if spec.wide:   # one cell per run: its seed count beside the value where it has several
            df["text"] = [t + (f" (n={int(n)})" if n > 1 else "") for t, n in zip(df["text"], df["n"])]
    else:
        df["text"] = [fmt_value(v, float("nan"), g, latex) for v, g in zip(df["paper"], df["paper_gain"])]
        keys = list(zip(df["block"], df["row"], df["metric"]))
        for i, (key, _) in enumerate(paper_notes(table, tidy_df)):
            at = keys.index(key)
            df.iloc[at, df.columns.get_loc("text")] += note_mark(i, latex)
    label = METRIC_LATEX if latex else {m: METRIC_MD.get(m, m) for m in spec.metrics}
    blocks = list(dict.fromkeys(df["block"]))
    if spec.wide:
        # t6: one line per block (detector), the swept values as columns
        wide = df.pivot(index="block", columns="row", values="text").reindex(index=blocks)
        wide = wide[list(dict.fromkeys(df["row"]))]
        wide.index.name, wide.columns.name = None, spec.wide
        return wide
    keys = list(dict.fromkeys(zip(df["block"], df["row"])))
    wide = df.pivot(index=["block", "row"], columns="metric", values="text")
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(keys, names=["block", "row"]), columns=list(spec.metrics))
    wide = wide.rename(columns=label)
    wide.columns.name = None
    if source == "ours":   # seeds per row (every metric of a row comes from the same runs)
        n = df.groupby(["block", "row"], sort=False)["n"].max()
        wide["n"] = [str(int(n.get(k, 0))) for k in wide.index]
    if spec.branches:
        marks = pd.DataFrame([[CHECK if f else "" if latex else ("x" if f else "") for f in BRANCH_ROWS[r]]
                              for r in wide.index.get_level_values("row")],
                             index=wide.index, columns=["neck", "cls", "reg"])
        wide = pd.concat([marks, wide], axis=1)
    if blocks == [""]:
        wide.index = wide.index.get_level_values("row")
        wide.index.name = "Setting"
    else:
        wide.index.names = ["Detector", "Setting"]
    return wide


# ------------------------------------------------------------------------------------------ rendering

def to_latex(frame: pd.DataFrame, caption: str, label: str, hide_index: bool = False,
             notes: list[str] = ()) -> str:
    """A `table` float: booktabs rules, a \\midrule between blocks, scaled to \\linewidth only when wider,
    `notes` (already marked in the cells) as lettered lines below the tabular."""
    names = [n or "" for n in frame.index.names]
    styler = frame.style.format_index(escape="latex", axis=0).format_index(escape=None, axis=1)
    # index names go into the header line's leading cells (below), not on a header line of their own
    styler = styler.hide(axis="index") if hide_index else styler.hide(axis="index", names=True)
    multi = frame.index.nlevels > 1
    tex = styler.to_latex(
        hrules=True,                       # booktabs \toprule \midrule \bottomrule
        caption=caption, label=label, position="t", position_float="centering",
        column_format=("l" * frame.index.nlevels if not hide_index else "") + "c" * frame.shape[1],
        multirow_align="naive", clines="skip-last;data" if multi else None,
        environment="table",
    )
    if not hide_index:
        tex = tex.replace("\\toprule\n" + " & " * len(names), "\\toprule\n" + " & ".join(names) + " & ", 1)
    # booktabs: a \midrule between detector blocks rather than \cline; none after the last block
    tex = re.sub(r"\\cline\{[0-9-]+\}", r"\\midrule", tex).replace("\\midrule\n\\bottomrule", "\\bottomrule")
    # \width is the tabular's natural width inside \resizebox's arguments: shrink only what does not fit
    tex = tex.replace("\\begin{tabular}", "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
                      "\\begin{tabular}", 1).replace("\\end{tabular}\n", "\\end{tabular}}\n", 1)
    if notes:
        lines = "\\\\\n".join(f"{note_mark(i)} {text}" for i, text in enumerate(notes))
        tex = tex.replace("\\end{table}", "\\par\\smallskip\n{\\footnotesize\\raggedright\n" + lines
                          + "\\par}\n\\end{table}", 1)
    return tex


def render(table: str, tidy_df: pd.DataFrame, stem: str, profile: str) -> str:
    spec = spec_of(table)
    hide = spec.branches
    ours = to_latex(cell_frame(table, tidy_df, "ours"), f"{spec.caption} Ours ({profile} profile). {SIG_NOTE}",
                    f"tab:{stem}", hide_index=hide)
    head = (f"% {stem}: generated by `pgd table --table {table} --profile {profile}`; needs "
            f"\\usepackage{{{','.join(PACKAGES)}}} (preamble.tex beside this file).\n")
    if not tidy_df["paper"].notna().any():   # a table the paper does not have (extras): no companion float
        return head + ours
    paper = to_latex(cell_frame(table, tidy_df, "paper"), f"{spec.caption} As reported in the paper.",
                     f"tab:{stem}-paper", hide_index=hide, notes=[t for _, t in paper_notes(table, tidy_df)])
    return head + ours + "\n" + paper


def to_markdown(table: str, tidy_df: pd.DataFrame, source: str) -> str:
    frame = cell_frame(table, tidy_df, source, latex=False)
    if frame.index.nlevels > 1:
        frame = frame.reset_index()
        frame["Detector"] = frame["Detector"].where(~frame["Detector"].duplicated(), "")
        text = frame.to_markdown(index=False)
    else:
        text = frame.to_markdown(index=not spec_of(table).branches)
    if source == "paper":
        text += "".join(f"\n\n{note_mark(i, latex=False).strip()} {t}"
                        for i, (_, t) in enumerate(paper_notes(table, tidy_df)))
    return text


def build(table: str, profile: str, seeds: list[int], results: str | Path = "results",
          matrix: Matrix | None = None, paper_path: str | Path = PAPER_NUMBERS,
          allow_missing: bool = False, stale: Collection[str] = ()) -> pd.DataFrame:
    matrix = matrix if matrix is not None else load_matrix()
    spec_of(table)
    paper = load_paper_numbers(paper_path)
    long = collect_metrics(matrix, table, profile, check_seeds(seeds), results, allow_missing, stale)
    ours = aggregate(long) if len(long) else pd.DataFrame(columns=["block", "row", "metric", "mean", "std", "n",
                                                                    "runs", "stale"])
    return tidy(table, ours, paper, row_order(table, matrix, paper))


def write_table(table: str, profile: str, seeds: list[int], results: str | Path = "results",
                out_dir: str | Path | None = None, matrix: Matrix | None = None,
                paper_path: str | Path = PAPER_NUMBERS, allow_missing: bool = False,
                allow_stale: bool = False, settings: Settings | None = None) -> tuple[Path, Path]:
    """Render one table. Refuses (StaleRunsError) when a run's metrics come from another configuration than the
    current one (pgd.provenance), unless ``allow_stale``: then those cells carry a dagger."""
    stem = ALL_TABLES[table][0] if table in ALL_TABLES else None
    matrix = matrix if matrix is not None else load_matrix()
    names = [inst.name for _, inst in matrix.cell_instances(table, check_seeds(seeds))]
    stale = check_stale(matrix, names, profile, seeds, results, allow_stale, settings, f"table {table}")
    df = build(table, profile, seeds, results, matrix, paper_path, allow_missing, {s.name for s in stale})
    out = Path(out_dir) if out_dir is not None else Path(results) / profile / "tables"
    out.mkdir(parents=True, exist_ok=True)
    tex, csv = out / f"{stem}.tex", out / f"{stem}.csv"
    atomic_write_text(tex, render(table, df, stem, profile))
    atomic_write_text(out / "preamble.tex", PREAMBLE)
    atomic_write_text(csv, df.to_csv(index=False, float_format="%.6g"))
    return tex, csv


def combine_blocks(table: str, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One table from several `pgd table` CSVs of it (e.g. snapshots that each ran some detectors), block by block.

    A block's gains, significance marks and seed noise depend only on its own rows, so a block is taken whole from
    the one CSV that has values for it; two CSVs with values for one block is an error (which to show is the
    user's choice), as is a CSV of another table. Lines keep the first CSV's order (the paper's), each block's
    together (blocks_together: CSVs written before that rule may split one)."""
    keys = ["block", "row", "metric"]
    order, chosen = None, {}
    cleaned = {}
    for name, df in frames.items():
        tables = set(df["table"].astype(str))
        if tables != {table}:
            raise TableError(f"{name}: a CSV of table(s) {sorted(tables)}, not {table!r}")
        df = cleaned[name] = df.assign(block=df["block"].fillna("").astype(str))
        order = df[keys] if order is None else order
        for block in df.loc[df["n"] > 0, "block"].unique():
            if block in chosen:
                raise TableError(f"block {block!r} has values in both {chosen[block]} and {name}; pass one of them")
            chosen[block] = name
    if order is None:
        raise TableError("no CSV to combine")
    first = next(iter(cleaned))
    lines = {}
    for name, df in cleaned.items():
        for rec in df.to_dict("records"):
            if chosen.get(rec["block"], first) == name:
                lines[(rec["block"], rec["row"], rec["metric"])] = rec
    keys = blocks_together(list(order.itertuples(index=False, name=None)))
    return pd.DataFrame.from_records([lines[k] for k in keys], columns=cleaned[first].columns)



def write_combined(table: str, csvs: list[str], out_dir: str | Path, profile: str) -> tuple[Path, Path]:
    frames = {}
    for path in csvs:
        if not Path(path).is_file():
            raise TableError(f"{path}: no such CSV (a `pgd table` output, e.g. docs/results/<snapshot>/tables/)")
        frames[path] = pd.read_csv(path, dtype={"block": str, "row": str, "metric": str, "runs": str})
    df = combine_blocks(table, frames)
    stem = ALL_TABLES[table][0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tex, csv = out / f"{stem}.tex", out / f"{stem}.csv"
    atomic_write_text(tex, render(table, df, stem, profile))
    atomic_write_text(out / "preamble.tex", PREAMBLE)
    atomic_write_text(csv, df.to_csv(index=False, float_format="%.6g"))
    return tex, csv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pgd table", description="Render a paper table (LaTeX + CSV) from metrics.")
    p.add_argument("--table", required=True, choices=list(ALL_TABLES),
                   help="paper table id: " + ", ".join(f"{t} ({stem})" for t, (stem, _) in TABLES.items())
                        + f"; or {EXTRA_TABLE} (methods no matrix row uses)")
    p.add_argument("--profile", default="mini", help="default %(default)s")
    p.add_argument("--results", default="results", help="results root (default %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds averaged per cell, shown as mean +- sample std when several (default 0)")
    p.add_argument("--matrix", default=None, help="experiment matrix (default configs/experiments.yaml)")
    p.add_argument("--paper-numbers", default=str(PAPER_NUMBERS), help="the paper's values (default: shipped)")
    p.add_argument("--out-dir", default=None, help="default <results>/<profile>/tables")
    p.add_argument("--allow-missing", action="store_true", help="render cells without metrics.json as --")
    p.add_argument("--allow-stale", action="store_true",
                   help="render runs computed with another configuration than the current one, marked with a "
                        "dagger (default: refuse and name them)")
    p.add_argument("--combine", nargs="+", metavar="CSV", default=None,
                   help="instead of reading metrics, assemble the table from `pgd table` CSVs of it (e.g. two "
                        "snapshots that ran different detectors), each block from the one CSV with values for it; "
                        "needs --out-dir")
    a = p.parse_args(argv)
    if a.combine is not None and a.out_dir is None:
        p.error("--combine needs --out-dir (where the combined .tex and .csv go)")
    try:
        if a.combine is not None:
            tex, csv = write_combined(a.table, a.combine, a.out_dir, a.profile)
            print(f"wrote {tex} and {csv}")
            return 0
        tex, csv = write_table(a.table, a.profile, a.seeds, a.results, a.out_dir,
                               with_extras(load_matrix(a.matrix)), a.paper_numbers, a.allow_missing, a.allow_stale)
    except (StaleRunsError, TableError) as err:
        print(f"pgd table: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {tex} and {csv}")
    return 0
