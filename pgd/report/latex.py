"""Compile `pgd table`'s LaTeX in a plain article (pdflatex) and render each table as a PNG (pdftoppm).

`python -m pgd.report.latex TABLES_DIR [--png-dir DIR]` checks that every table there compiles with only the
packages of its preamble.tex and fits a portrait text width (no overfull box), and with --png-dir writes
<stem>.png per table (both floats, cropped to the ink). Needs a TeX engine (Debian: texlive-latex-base and
texlive-latex-recommended for booktabs) and, for PNGs, poppler-utils.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ENGINE = "pdflatex"


class LatexError(RuntimeError):
    """The document did not compile, or a table does not fit."""


def document(tables: list[Path], preamble: Path) -> str:
    """A plain portrait article: the tables' preamble, then every table on its own page."""
    body = "\n\\clearpage\n".join(f"\\input{{{t.resolve().as_posix()}}}" for t in tables)
    return (f"\\documentclass{{article}}\n\\input{{{preamble.resolve().as_posix()}}}\n\\pagestyle{{empty}}\n"
            f"\\begin{{document}}\n{body}\n\\end{{document}}\n")


def overfull_boxes(log: str) -> list[str]:
    """The 'Overfull \\hbox/\\vbox' lines of a TeX log."""
    return [ln for ln in log.splitlines() if ln.startswith(("Overfull \\hbox", "Overfull \\vbox"))]


def compile_tables(tables: list[Path], preamble: Path, workdir: Path) -> Path:
    """pdflatex the tables into workdir/tables.pdf; LatexError naming the first error or the overfull boxes."""
    if shutil.which(ENGINE) is None:
        raise LatexError(f"no {ENGINE} on PATH (Debian: apt-get install texlive-latex-base "
                         "texlive-latex-recommended)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tables.tex").write_text(document(tables, preamble))
    proc = subprocess.run([ENGINE, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    log = (workdir / "tables.log").read_text(errors="replace") if (workdir / "tables.log").is_file() else ""
    if proc.returncode != 0:
        err = next((ln for ln in log.splitlines() if ln.startswith("!")), proc.stdout[-500:])
        raise LatexError(f"{ENGINE} failed on {', '.join(t.name for t in tables)}: {err}")
    bad = overfull_boxes(log)
    if bad:
        raise LatexError(f"{', '.join(t.name for t in tables)}: {len(bad)} overfull box(es), first: {bad[0]}")
    return workdir / "tables.pdf"


def pdf_to_png(pdf: Path, png: Path, dpi: int = 110) -> Path:
    """Every page of `pdf`, each cropped to the ink, stacked top to bottom into `png`."""
    import numpy as np
    from PIL import Image

    if shutil.which("pdftoppm") is None:
        raise LatexError("no pdftoppm on PATH (Debian: apt-get install poppler-utils)")
    with tempfile.TemporaryDirectory(prefix="pgd-pdftoppm-") as tmp:
        subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), f"{tmp}/page"], check=True,
                       capture_output=True, timeout=120)
        pad, parts = dpi // 10, []
        for page in sorted(Path(tmp).glob("page*.png")):
            px = np.asarray(Image.open(page).convert("L"))
            ink = np.argwhere(px < 250)
            if len(ink):
                (y0, x0), (y1, x1) = ink.min(0), ink.max(0)
                px = px[max(0, y0 - pad):y1 + pad + 1, max(0, x0 - pad):x1 + pad + 1]
                # the page's blank band between two floats shrinks to a gap of 2 * pad
                inked = (px < 250).any(1)
                keep = inked | (np.convolve(inked, np.ones(2 * pad + 1), "same") > 0)
                parts.append(Image.fromarray(px[keep]))
    sheet = Image.new("L", (max(p.width for p in parts), sum(p.height for p in parts)), 255)
    y = 0
    for part in parts:
        sheet.paste(part, (0, y))
        y += part.height
    sheet.save(png, optimize=True)
    return png


def render_pngs(tables_dir: Path, png_dir: Path | None = None) -> list[Path]:
    """Compile every tables_dir/table*.tex alone (each must fit), and with png_dir write <stem>.png for each."""
    tables = sorted(tables_dir.glob("table*.tex"))
    if not tables:
        raise LatexError(f"{tables_dir}: no table*.tex (run `pgd table` first)")
    preamble = tables_dir / "preamble.tex"
    if not preamble.is_file():
        raise LatexError(f"{preamble} missing (`pgd table` writes it)")
    out = []
    with tempfile.TemporaryDirectory(prefix="pgd-latex-") as tmp:
        for tex in tables:
            pdf = compile_tables([tex], preamble, Path(tmp) / tex.stem)
            if png_dir is not None:
                png_dir.mkdir(parents=True, exist_ok=True)
                out.append(pdf_to_png(pdf, png_dir / f"{tex.stem}.png"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgd.report.latex",
                                description="Compile each generated table with pdflatex (overfull boxes fail) "
                                            "and optionally render it as a PNG.")
    p.add_argument("tables_dir", type=Path, help="a `pgd table` output directory (results/<profile>/tables)")
    p.add_argument("--png-dir", type=Path, default=None, help="write <stem>.png per table here")
    a = p.parse_args(argv)
    try:
        pngs = render_pngs(a.tables_dir, a.png_dir)
    except LatexError as err:
        raise SystemExit(f"error: {err}")
    print(f"{len(list(a.tables_dir.glob('table*.tex')))} tables compile and fit"
          + (f"; wrote {len(pngs)} PNGs to {a.png_dir}" if pngs else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
