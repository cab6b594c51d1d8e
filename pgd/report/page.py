"""`pgd report`: results/<profile>/report.md, every table and figure of a profile in one page.

Per table: ours and the paper's numbers as markdown, the generated LaTeX, and the settings each run actually
trained with, read back from its config.py (the KD losses' keywords, including the paper-vs-code `preset` and
switches, the distiller flags and the schedule), so that which paper/code choice a table used is on the page.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pgd.config import DISTILLER_KEYS
from pgd.matrix import FIGURES, TABLES, Matrix, check_seeds, load_matrix, run_dir
from pgd.provenance import StaleRunsError, check_stale, run_commits
from pgd.report.regime import regime_warnings
from pgd.report.shape import shape_markdown
from pgd.report.significance import orderings
from pgd.report.tables import SPECS, cell_frame, to_markdown

FIGURE_CAPTIONS = {
    1: "Fig. 1: foreground distillation regions of the ATSS teacher: (a) Box, (b) BoxGauss, (c) FGFI, (d) PGD; "
       "GT in blue.",
    2: "Fig. 2: teacher prediction quality (xi = 0.8), max over FPN levels, for the five detectors.",
    3: "Fig. 3: COCO AP of the teachers after masking their top-X% quality predictions before NMS.",
    5: "Fig. 5: ATSS detections; GT blue, plain student red, PGD student orange.",
}


def read_tidy_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"block": str, "row": str, "runs": str})
    df["block"] = df["block"].fillna("")
    return df


def run_settings(config_path: Path) -> dict[str, Any]:
    """What a run trained with, from its dumped config.py: KD losses (every keyword, the paper/code `preset`
    included), distiller flags, schedule length and batch."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_path))
    model = cfg.model
    out: dict[str, Any] = {"KD losses": "-"}
    if model.get("type") == "DistillDetector":
        out["KD losses"] = "; ".join(
            f"{loss.get('type', '?')}(" + ", ".join(f"{k}={_short(v)}" for k, v in sorted(loss.items())
                                                   if k != "type") + ")"
            for loss in model.get("kd_losses", []))
        for key in DISTILLER_KEYS:
            if key in model:
                out[key] = model[key]
    loop = cfg.get("train_cfg") or {}
    out["iters"] = loop.get("max_iters", loop.get("max_epochs"))
    out["batch"] = cfg.get("train_dataloader", {}).get("batch_size")
    return out


def settings_table(matrix: Matrix, table: str, profile: str, results: str | Path) -> str:
    """Markdown: one line per run of the table (seed 0); settings equal for all its runs are listed once."""
    runs = matrix.runs_for_table(table)
    if not runs:
        return "*No run of the matrix feeds this table.*"
    rows = []
    for run in runs:
        path = run_dir(profile, run.id, 0, results) / "config.py"
        base = {"run": run.id, "method": run.method or "-"}
        if path.is_file():
            rows.append({**base, **{k: str(v) for k, v in run_settings(path).items()}})
        else:
            rows.append({**base, "KD losses": "(config.py missing: not trained yet)"})
    df = pd.DataFrame(rows).fillna("")
    varying = [c for c in df.columns[2:] if df[c].nunique() > 1 or c == "KD losses"]
    constant = [c for c in df.columns[2:] if c not in varying and df[c].iloc[0] != ""]
    text = df[["run", "method", *varying]].to_markdown(index=False)
    if constant:
        text += "\n\nCommon to every run of this table: " + ", ".join(f"{c}={df[c].iloc[0]}" for c in constant)
    return text


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def _table_runs(matrix: Matrix, table: str, seeds: list[int]) -> list[str]:
    return [inst.name for _, inst in matrix.cell_instances(table, seeds)]


def provenance_lines(matrix: Matrix, profile: str, seeds: list[int], results: str | Path,
                     stale: list | tuple = ()) -> list[str]:
    """Which code the runs were computed with, and which were computed with another configuration."""
    commits = run_commits(matrix, [i.name for i in matrix.instances(seeds)], profile, results)
    by_commit: dict[str, int] = {}
    for c in commits.values():
        by_commit[c] = by_commit.get(c, 0) + 1
    lines = ["## Provenance", ""]
    if not commits:
        return lines + ["*No run has metrics yet.*", ""]
    lines.append("Runs by the commit of the code that trained them (`+dirty`: with uncommitted changes): "
                 + ", ".join(f"`{c}` ({n})" for c, n in sorted(by_commit.items())) + ".")
    if stale:
        lines += ["", f"**{len(stale)} run(s) are stale** (computed with another configuration than the current "
                      "one; their cells carry a dagger): " + ", ".join(f"`{s.name}`" for s in stale) + "."]
    return lines + [""]


INIT_WORDS = {
    "teacher": "every KD method starts from the teacher's neck and head (copied in where shapes match), so the KD "
               "rows differ from each other and from each block's *Inherit only* control by their loss alone",
    "method": "each KD method starts as its official config says: PGD and FGD copy the teacher's neck and head in, "
              "the others do not; *Inherit only* shows what the copy alone gives",
    "random": "no KD method inherits the teacher's neck or head",
}


def protocol_lines(profile: str) -> list[str]:
    """How the profile's distilled students start, in words (docs/protocol.md), with where it was measured."""
    from pgd.config import check_student_init, load_profile

    init = check_student_init(profile, load_profile(profile).get("student_init"))
    return ["## Protocol", "",
            f"Student initialisation (`student_init = '{init}'`): {INIT_WORDS[init]}. `table1_init` sets both "
            "choices side by side for ATSS and FCOS; docs/protocol.md gives the rules (controls, seeds, the "
            "two-standard-error marks).", ""]


def build_page(profile: str, seeds: list[int], results: str | Path = "results",
               matrix: Matrix | None = None, stale: list | tuple = ()) -> str:
    matrix = matrix if matrix is not None else load_matrix()
    seeds = check_seeds(seeds)
    out = Path(results) / profile
    lines = [f"# PGD reproduction: `{profile}` profile", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `configs/experiments.yaml` "
             f"({len(matrix)} runs; the profile's seeds {seeds} plus each row's own: a cell with several seeds shows "
             "mean ± sample std, n is the seed count, * marks a significant gain: beyond the 95 % t quantile of standard errors of the block's pooled seed std). "
             "COCO metrics are AP x 100 on the val split; CrowdHuman: MR (lower is better), AP, JI. "
             "Gains in parentheses are over the block's student (Table 4: the self-distillation S & T), computed "
             "from the displayed values. Each table is followed by the paper's own numbers "
             "(`pgd/report/paper_numbers.csv`).", ""]
    lines += protocol_lines(profile)
    lines += provenance_lines(matrix, profile, seeds, results, stale)
    for tid, (stem, rule) in TABLES.items():
        spec = SPECS[tid]
        lines += [f"## {stem.replace('_', ' ').capitalize()}: {spec.caption}", "",
                  f"Build alone: `snakemake --cores all {rule}`.", ""]
        commits = sorted(set(run_commits(matrix, _table_runs(matrix, tid, seeds), profile, results).values()))
        if len(commits) > 1:
            lines += [f"> **Warning:** this table mixes runs computed with {len(commits)} code versions "
                      f"({', '.join(commits)}); `pgd status` lists each run's.", ""]
        csv, tex = out / "tables" / f"{stem}.csv", out / "tables" / f"{stem}.tex"
        if not csv.is_file():
            lines += [f"*{csv} not built yet.*", ""]
            continue
        df = read_tidy_csv(csv)
        warnings = regime_warnings(df, "AP" if "AP" in spec.metrics else spec.metrics[0], tid)
        if warnings:
            lines += ["> **Outside the paper's regime** (`pgd.report.regime`, docs/protocol.md): these blocks cannot "
                      "show what the paper's show, whatever their numbers.", ">"]
            lines += [f"> - {w}" for w in warnings] + [""]
        lines += ["**Ours**", "", to_markdown(tid, df, "ours"), ""]
        lines += ["**What the seeds resolve** (a difference counts beyond the 95 % t quantile of standard errors of "
                  "the block's pooled seed std; `pgd.report.significance`)", ""]
        metric = "MR" if "MR" in spec.metrics else spec.metrics[0]
        lines += [f"- {s}" for s in orderings(df, metric, spec.references)] + [""]
        lines += ["**Paper**", "", to_markdown(tid, df, "paper"), ""]
        if df["paper"].notna().any() and {"Teacher", "Student"} <= set(df["row"]):
            main = "AP" if "AP" in spec.metrics else spec.metrics[0]
            lines += [f"**Shape beside the paper** ({main}; `pgd.report.shape`: the plain student's fraction of its "
                      "teacher, the fraction of the teacher-student gap each row closes, and Kendall's tau of the "
                      "method rows' order against the paper's)", "", shape_markdown(df, main), ""]
        if tex.is_file():
            png = tex.with_suffix(".png")      # python -m pgd.report.latex --png-dir: the table as TeX sets it
            lines += ([f"![{stem} as pdflatex sets it](tables/{png.name})", ""] if png.is_file() else [])
            lines += ["<details><summary>LaTeX</summary>", "", "```latex", tex.read_text().rstrip(), "```", "",
                      "</details>", ""]
        lines += ["**Settings the runs trained with** (from each run's `config.py`)", "",
                  settings_table(matrix, tid, profile, results), ""]
    lines += ["## Figures", ""]
    for n in FIGURES:
        png, pdf = out / "figures" / f"fig{n}.png", out / "figures" / f"fig{n}.pdf"
        # the PDF is linked only where it is (a committed snapshot keeps the PNGs alone)
        lines += [f"![{FIGURE_CAPTIONS[n]}](figures/fig{n}.png)" if png.is_file() else f"*{png} not built yet.*",
                  "", FIGURE_CAPTIONS[n] + (f" ([PDF](figures/fig{n}.pdf))" if pdf.is_file() else ""), ""]
    return "\n".join(lines)


def write_page(profile: str, seeds: list[int], results: str | Path = "results", matrix: Matrix | None = None,
               out: str | Path | None = None, allow_stale: bool = False) -> Path:
    """Refuses (StaleRunsError) when a run's metrics come from another configuration, unless ``allow_stale``."""
    matrix = matrix if matrix is not None else load_matrix()
    seeds = check_seeds(seeds)
    stale = check_stale(matrix, [i.name for i in matrix.instances(seeds)], profile, seeds, results, allow_stale,
                        what="report")
    path = Path(out) if out else Path(results) / profile / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(build_page(profile, seeds, results, matrix, stale))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pgd report", description="Write the per-profile report page.")
    p.add_argument("--profile", default="mini", help="default %(default)s")
    p.add_argument("--results", default="results", help="results root (default %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds the tables average (default 0)")
    p.add_argument("--matrix", default=None, help="experiment matrix (default configs/experiments.yaml)")
    p.add_argument("--out", default=None, help="default <results>/<profile>/report.md")
    p.add_argument("--allow-stale", action="store_true",
                   help="write the page although some runs were computed with another configuration (named on it)")
    a = p.parse_args(argv)
    try:
        path = write_page(a.profile, a.seeds, a.results, load_matrix(a.matrix), a.out, a.allow_stale)
    except StaleRunsError as err:
        print(f"pgd report: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
