"""The experiment matrix (configs/experiments.yaml): load, validate, expand seeds, locate run directories.

One row per training run; each row names the table cells its metrics fill. The Snakemake DAG, the MLflow tags
(`Run.tables`) and the tables are all derived from this file, so every mistake in it is caught here, at load
time, with the file and the run id in the message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from pgd.errors import UserError
from pgd.suggest import did_you_mean
from pgd.vocab import BACKBONES, BRANCHES, DATASETS, DETECTORS, FG_STRATEGIES, ROLES, methods

# Paper table id -> (output file stem, Snakemake rule building it). Order = the paper's order.
TABLES: dict[str, tuple[str, str]] = {
    "t1": ("table1", "table1"),
    # not in the paper: Table 1's ATSS and FCOS blocks with every KD method started both ways (the teacher's neck
    # and head copied in, or not), the measurement behind a profile's student_init (docs/protocol.md)
    "t1i": ("table1_init", "table1_init"),
    "t2": ("table2", "table2"),
    "t3": ("table3", "table3"),
    "t4": ("table4", "table4"),
    "t5": ("table5", "table5"),
    "t6k": ("table6_k", "table6_k"),
    "t6a": ("table6_alpha", "table6_alpha"),
    "t7": ("table7", "table7"),
    # not in the paper: PGD under the paper's equations (the profile's preset) and under the official code's
    # normalisation (preset 'code'), ATSS and FCOS at seeds 0-2 (docs/pgd-settings.md)
    "tpc": ("table_paper_vs_code", "table_paper_vs_code"),
}
# Methods with a config in configs/distill/ that no row of the matrix uses (PKD) are *extras*: the `extras` target
# trains each on these detectors (the matrix's R101 teacher -> an R50 student, COCO, the plain student's recipe) and
# tables/extras.* sets them beside the matrix's Teacher / Student / PGD runs of the detector (docs/adding-a-method.md).
# The default DAG does not include them.
EXTRA_TABLE = "extras"
EXTRA_DETECTORS = ("atss",)
ALL_TABLES: dict[str, tuple[str, str]] = {**TABLES, EXTRA_TABLE: (EXTRA_TABLE, EXTRA_TABLE)}
# Tables whose rows are grouped by detector (the `block` of a cell is required there).
BLOCKED_TABLES = frozenset({"t1", "t1i", "t2", "t4", "t6k", "t6a", "tpc", EXTRA_TABLE})
CROWD_TABLES = frozenset({"t3"})

# the vocabulary (detectors, backbones, methods, strategies, branches) is derived once, in pgd.vocab
METHODS = methods()

RUN_KEYS = {"id", "detector", "backbone", "role", "dataset", "method", "teacher", "method_overrides", "cells", "note",
            "seeds"}
REQUIRED_KEYS = ("id", "detector", "backbone", "role", "cells")
CELL_KEYS = {"table", "block", "row"}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.]*$")
_SEED_SUFFIX_RE = re.compile(r"_s\d+$")


class MatrixError(UserError, ValueError):
    """The experiment matrix (or a seed list) is malformed; the message names the file and the run."""


def repo_root() -> Path:
    """The checkout holding configs/ (the package is installed editable from it)."""
    return Path(__file__).resolve().parents[1]


def default_matrix_path() -> Path:
    env = os.environ.get("PGD_MATRIX")
    return Path(env) if env else repo_root() / "configs" / "experiments.yaml"


@dataclass(frozen=True)
class Cell:
    table: str
    row: str
    block: str | None = None


@dataclass(frozen=True)
class Run:
    id: str
    detector: str
    backbone: str
    role: str
    cells: tuple[Cell, ...]
    dataset: str = "coco"
    method: str | None = None
    teacher: str | None = None
    method_overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    note: str = ""
    seeds: tuple[int, ...] = ()          # the row's own seeds, trained on top of the profile's (`seeds:` key)

    @property
    def tables(self) -> list[str]:
        """Tables this run feeds, in the paper's order (the MLflow `tables` tag)."""
        mine = {c.table for c in self.cells}
        return [t for t in ALL_TABLES if t in mine]

    @property
    def distilled(self) -> bool:
        return self.method is not None

    def as_dict(self) -> dict[str, Any]:
        """The row as `pgd train` reads it (with the derived `tables`)."""
        return {
            "id": self.id, "detector": self.detector, "backbone": self.backbone, "role": self.role,
            "dataset": self.dataset, "method": self.method, "teacher": self.teacher,
            "method_overrides": dict(self.method_overrides), "tables": self.tables, "seeds": list(self.seeds),
            "cells": [{k: v for k, v in vars(c).items() if v is not None} for c in self.cells],
        }


@dataclass(frozen=True)
class RunInstance:
    """One run at one seed: what Snakemake trains and evaluates."""
    run: Run
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.run.id, self.seed)


def run_name(run_id: str, seed: int = 0) -> str:
    """Directory / MLflow name of a run at a seed: `<id>` for seed 0, `<id>_s<seed>` otherwise."""
    return run_id if seed == 0 else f"{run_id}_s{seed}"


def run_dir(profile: str, run_id: str, seed: int = 0, results: str | Path = "results") -> Path:
    """`results/<profile>/runs/<run_id>[_s<seed>]`, relative to `results`' parent (the repo root by default)."""
    return Path(results) / profile / "runs" / run_name(run_id, seed)


def check_seeds(seeds: Iterable[Any]) -> list[int]:
    """Validate a profile's seed list. Seed 0 must be present: teachers are trained once, at seed 0."""
    seeds = list(seeds)
    if not seeds:
        raise MatrixError("seeds: the list is empty; give at least [0]")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise MatrixError(f"seeds: {s!r} is not a non-negative integer")
    if len(set(seeds)) != len(seeds):
        raise MatrixError(f"seeds: duplicates in {seeds}")
    if 0 not in seeds:
        raise MatrixError(f"seeds: {seeds} lacks 0 (teachers and self-distillation teachers use seed 0)")
    return seeds


class Matrix:
    def __init__(self, runs: list[Run], path: Path | None = None):
        self.path = path
        self.runs: dict[str, Run] = {r.id: r for r in runs}

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs.values())

    def __getitem__(self, run_id: str) -> Run:
        try:
            return self.runs[run_id]
        except KeyError:
            raise MatrixError(f"{self.path}: no run with id {run_id!r}" + did_you_mean(run_id, self.runs)) from None

    @property
    def teachers(self) -> list[Run]:
        return [r for r in self if r.role == "teacher"]

    @property
    def students(self) -> list[Run]:
        return [r for r in self if r.role == "student"]

    def runs_for_table(self, table: str) -> list[Run]:
        """Runs whose metrics fill a cell of `table`."""
        _check_table(table)
        return [r for r in self if any(c.table == table for c in r.cells)]

    def required_runs(self, table: str) -> list[Run]:
        """Runs a table needs trained: its cells' runs plus their teachers (matrix order)."""
        need = {r.id for r in self.runs_for_table(table)}
        need |= {self.runs[i].teacher for i in need if self.runs[i].teacher}
        return [r for r in self if r.id in need]

    def instances(self, seeds: Iterable[int], runs: Iterable[Run] | None = None) -> list[RunInstance]:
        """Expand runs over the profile's seeds plus each row's own (`seeds:`); teachers train at seed 0 only."""
        seeds = check_seeds(seeds)
        out = []
        for r in self if runs is None else runs:
            for s in dict.fromkeys([*seeds, *r.seeds]):
                if r.role == "teacher" and s != 0:
                    continue
                out.append(RunInstance(r, s))
        return out

    def teacher_instances(self, seeds: Iterable[int]) -> list[RunInstance]:
        return self.instances(seeds, self.teachers)

    def student_instances(self, seeds: Iterable[int]) -> list[RunInstance]:
        return self.instances(seeds, self.students)

    def cell_instances(self, table: str, seeds: Iterable[int]) -> list[tuple[Cell, RunInstance]]:
        """Every (cell, run instance) pair of a table; several seeds give several pairs per cell."""
        _check_table(table)
        return [(c, inst) for inst in self.instances(seeds, self.runs_for_table(table))
                for c in inst.run.cells if c.table == table]

    def teacher_of(self, instance: RunInstance) -> RunInstance | None:
        """The teacher a distilled run instance learns from (always the teacher's seed-0 instance)."""
        t = instance.run.teacher
        return RunInstance(self.runs[t], 0) if t else None

    def by_name(self, name: str) -> RunInstance:
        """Inverse of run_name(): `atss_r50_pgd_s2` -> (atss_r50_pgd, 2)."""
        if name in self.runs:
            return RunInstance(self.runs[name], 0)
        m = _SEED_SUFFIX_RE.search(name)
        if m and name[: m.start()] in self.runs:
            return RunInstance(self.runs[name[: m.start()]], int(m.group()[2:]))
        raise MatrixError(f"{self.path}: {name!r} is neither a run id nor <run id>_s<seed>"
                          + did_you_mean(name, self.runs))


def _check_table(table: str) -> None:
    if table not in ALL_TABLES:
        raise MatrixError(f"unknown table {table!r}; known: {', '.join(ALL_TABLES)}")


def extra_methods(matrix: Matrix) -> list[str]:
    """Methods with a config in configs/distill/ that no run of the matrix uses."""
    used = {r.method for r in matrix if r.method}
    return [m for m in METHODS if m not in used]


def with_extras(matrix: Matrix) -> Matrix:
    """The matrix plus a run per extra method and detector of EXTRA_DETECTORS (``<det>_r50_<method>``), and the
    extras table's cells on the runs they are compared with (the detector's R101 teacher, R50 student, Inherit-only
    control and PGD: extra methods start from the teacher's neck and head too, so only the control shows what the
    loss adds)."""
    runs = dict(matrix.runs)
    for det in EXTRA_DETECTORS:
        teacher = f"{det}_r101_teacher"
        if teacher not in runs:
            continue
        block = next((c.block for r in matrix.runs_for_table("t1") if r.detector == det for c in r.cells
                      if c.table == "t1"), det)
        for rid, label in ((teacher, "Teacher"), (f"{det}_r50_student", "Student"),
                           (f"{det}_r50_inherit", "Inherit only"), (f"{det}_r50_pgd", "PGD")):
            if rid in runs:
                runs[rid] = replace(runs[rid], cells=runs[rid].cells + (Cell(EXTRA_TABLE, label, block),))
        for method in extra_methods(matrix):
            allowed = method_detectors(method)
            rid = f"{det}_r50_{method}"
            if (allowed and det not in allowed) or rid in runs:
                continue
            runs[rid] = Run(id=rid, detector=det, backbone="r50", role="student", method=method, teacher=teacher,
                            cells=(Cell(EXTRA_TABLE, method.upper(), block),),
                            note="an extra method (pgd.matrix.with_extras), trained by the `extras` target")
    return Matrix(list(runs.values()), matrix.path)


def load_matrix(path: str | Path | None = None) -> Matrix:
    path = Path(path) if path is not None else default_matrix_path()
    if not path.is_file():
        raise MatrixError(f"{path}: experiment matrix not found")
    with open(path) as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise MatrixError(f"{path}: not valid YAML: {e}") from None
    return parse_matrix(doc, path)


def parse_matrix(doc: Any, path: str | Path = "<matrix>") -> Matrix:
    where = str(path)
    if not isinstance(doc, dict) or set(doc) != {"runs"} or not isinstance(doc["runs"], list):
        raise MatrixError(f"{where}: the top level must be a mapping with one key, 'runs', holding a list")
    runs: list[Run] = []
    seen: set[str] = set()
    for i, row in enumerate(doc["runs"]):
        run = _parse_run(row, f"{where}: run #{i + 1}")
        if run.id in seen:
            raise MatrixError(f"{where}: duplicate run id {run.id!r}")
        seen.add(run.id)
        runs.append(run)
    matrix = Matrix(runs, Path(path))
    _check_references(matrix, where)
    _check_cells_unique(matrix, where)
    return matrix


def _choice(row: dict, key: str, allowed: tuple, where: str, default: Any = None) -> Any:
    value = row.get(key, default)
    if value not in allowed:
        raise MatrixError(f"{where}: {key} {value!r} is not one of {', '.join(map(str, allowed))}"
                          + did_you_mean(value, map(str, allowed)))
    return value


def _parse_run(row: Any, where: str) -> Run:
    if not isinstance(row, dict):
        raise MatrixError(f"{where}: a run must be a mapping, got {type(row).__name__}")
    run_id = row.get("id")
    if not isinstance(run_id, str) or not _ID_RE.match(run_id):
        raise MatrixError(f"{where}: id {run_id!r} must match {_ID_RE.pattern}")
    if _SEED_SUFFIX_RE.search(run_id):
        raise MatrixError(f"{where} ({run_id}): an id may not end in _s<digits> (reserved for seed suffixes)")
    where = f"{where} ({run_id})"
    unknown = set(row) - RUN_KEYS
    if unknown:
        raise MatrixError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(RUN_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise MatrixError(f"{where}: missing key(s) {missing}")

    detector = _choice(row, "detector", DETECTORS, where)
    backbone = _choice(row, "backbone", BACKBONES, where)
    role = _choice(row, "role", ROLES, where)
    dataset = _choice(row, "dataset", DATASETS, where, default="coco")
    method = row.get("method")
    if method is not None:
        _choice(row, "method", METHODS, where)
        if role == "teacher":
            raise MatrixError(f"{where}: a teacher is trained plainly; drop method {method!r}")
        if "teacher" not in row:
            raise MatrixError(f"{where}: method {method!r} needs a teacher run id")
        allowed = method_detectors(method)
        if allowed and detector not in allowed:
            raise MatrixError(f"{where}: method {method!r} applies only to {allowed}, not {detector!r}")
    elif "teacher" in row or row.get("method_overrides"):
        raise MatrixError(f"{where}: teacher / method_overrides given but no method")
    teacher = row.get("teacher")
    if teacher is not None and not isinstance(teacher, str):
        raise MatrixError(f"{where}: teacher must be a run id string")

    overrides = row.get("method_overrides") or {}
    if not isinstance(overrides, dict):
        raise MatrixError(f"{where}: method_overrides must be a mapping")
    if overrides:
        _check_override_keys(method, overrides, where)
    if method == "pgd":
        _check_pgd_overrides(overrides, detector, where)

    cells = row["cells"]
    if not isinstance(cells, list) or not cells:
        raise MatrixError(f"{where}: cells must be a non-empty list (a run that feeds no table is not run)")
    parsed = tuple(_parse_cell(c, dataset, f"{where} cell #{j + 1}") for j, c in enumerate(cells))
    note = row.get("note", "")
    if not isinstance(note, str):
        raise MatrixError(f"{where}: note must be a string")
    seeds = row.get("seeds", [])
    if not isinstance(seeds, list):
        raise MatrixError(f"{where}: seeds must be a list of seeds, e.g. [0, 1, 2]")
    if seeds:
        try:
            seeds = check_seeds(seeds)
        except MatrixError as err:
            raise MatrixError(f"{where}: {err}") from None
        if role == "teacher" and seeds != [0]:
            raise MatrixError(f"{where}: a teacher trains once, at seed 0; drop seeds {seeds}")
    return Run(id=run_id, detector=detector, backbone=backbone, role=role, cells=parsed, dataset=dataset,
               method=method, teacher=teacher, method_overrides=dict(overrides), note=note, seeds=tuple(seeds))


def method_detectors(method: str) -> tuple[str, ...] | None:
    """The detectors every KD loss of ``method`` supports (None: all), from the losses' ``supported_detectors``."""
    from pgd.config import distill_loss_types
    from pgd.vocab import kd_loss_detectors, kd_loss_types

    allowed = set(DETECTORS)
    for loss_type in distill_loss_types(method):
        if loss_type in kd_loss_types():   # a loss from outside pgd/losses checks itself when it is built
            allowed &= set(kd_loss_detectors(loss_type) or DETECTORS)
    return None if allowed == set(DETECTORS) else tuple(d for d in DETECTORS if d in allowed)


def _check_override_keys(method: str, ov: dict, where: str) -> None:
    """Every key must be accepted by the distiller or the method's KD losses (read from their code): a misspelt
    key would otherwise fail only when the student builds its model, after its teacher has trained."""
    from pgd.config import ConfigCompositionError, check_method_overrides

    try:
        check_method_overrides(method, ov)
    except ConfigCompositionError as err:
        raise MatrixError(f"{where}: method_overrides: {err}") from None


def _check_pgd_overrides(ov: dict, detector: str, where: str) -> None:
    if "preset" in ov:
        from pgd.core.settings import PGDSettings

        try:
            PGDSettings.from_dict({"preset": ov["preset"], "detector": detector})
        except ValueError as err:
            raise MatrixError(f"{where}: {err}") from None
    if "fg_strategy" in ov and ov["fg_strategy"] not in FG_STRATEGIES:
        raise MatrixError(f"{where}: fg_strategy {ov['fg_strategy']!r} is not one of {', '.join(FG_STRATEGIES)}")
    if "k" in ov and (isinstance(ov["k"], bool) or not isinstance(ov["k"], int) or ov["k"] < 1):
        raise MatrixError(f"{where}: k must be a positive integer, got {ov['k']!r}")
    for key in ("alpha", "beta", "gamma", "delta", "tau"):
        v = ov.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise MatrixError(f"{where}: {key} must be a non-negative number, got {v!r}")
    if "branches" in ov:
        b = ov["branches"]
        if not isinstance(b, list) or not b or any(x not in BRANCHES for x in b) or len(set(b)) != len(b):
            raise MatrixError(f"{where}: branches must be a non-empty list of distinct {BRANCHES}, got {b!r}")


def _parse_cell(cell: Any, dataset: str, where: str) -> Cell:
    if not isinstance(cell, dict):
        raise MatrixError(f"{where}: a cell must be a mapping {{table, block, row}}")
    unknown = set(cell) - CELL_KEYS
    if unknown:
        raise MatrixError(f"{where}: unknown cell key(s) {sorted(unknown)}; allowed: {sorted(CELL_KEYS)}")
    table = cell.get("table")
    if table not in TABLES:
        raise MatrixError(f"{where}: unknown table {table!r}; known: {', '.join(TABLES)}")
    row = cell.get("row")
    if not isinstance(row, (str, int, float)) or isinstance(row, bool) or str(row) == "":
        raise MatrixError(f"{where}: row must be a label, got {row!r}")
    block = cell.get("block")
    if table in BLOCKED_TABLES and not block:
        raise MatrixError(f"{where}: table {table} groups rows by detector; give a block")
    if table not in BLOCKED_TABLES and block:
        raise MatrixError(f"{where}: table {table} has no blocks; drop block {block!r}")
    if (table in CROWD_TABLES) != (dataset == "crowdhuman"):
        raise MatrixError(f"{where}: table {table} cannot show a run on dataset {dataset!r}")
    return Cell(table=table, row=str(row), block=str(block) if block else None)


def _check_references(m: Matrix, where: str) -> None:
    for r in m:
        if r.teacher is None:
            continue
        t = m.runs.get(r.teacher)
        if t is None:
            raise MatrixError(f"{where}: run {r.id!r} names teacher {r.teacher!r}, which is not in the matrix")
        if t.id == r.id:
            raise MatrixError(f"{where}: run {r.id!r} names itself as its teacher")
        if t.method is not None:
            raise MatrixError(f"{where}: run {r.id!r}: teacher {t.id!r} is itself distilled; teachers are plain")
        if (t.detector, t.dataset) != (r.detector, r.dataset):
            raise MatrixError(f"{where}: run {r.id!r} ({r.detector}, {r.dataset}) cannot learn from "
                              f"{t.id!r} ({t.detector}, {t.dataset}): detector and dataset must match")


def _check_cells_unique(m: Matrix, where: str) -> None:
    owner: dict[Cell, str] = {}
    for r in m:
        for c in r.cells:
            if c in owner:
                raise MatrixError(f"{where}: cell {c} is fed by both {owner[c]!r} and {r.id!r}")
            owner[c] = r.id


# Figures: which runs each one draws on (Figs. 2 and 3 show the five COCO teachers, Figs. 1 and 5 use ATSS, as the
# paper does). Kept beside the matrix so Snakemake's inputs and `pgd figure` agree.
FIGURES = (1, 2, 3, 5)
FIG1_TEACHER = "atss_r101_teacher"
FIG5_RUNS = ("atss_r50_student", "atss_r50_pgd")


def figure_runs(matrix: Matrix, fig: int) -> list[Run]:
    if fig not in FIGURES:
        raise MatrixError(f"unknown figure {fig!r}; the paper's result figures are {FIGURES}")
    if fig in (2, 3):
        return [r for r in matrix.teachers if r.dataset == "coco"]
    ids = (FIG1_TEACHER,) if fig == 1 else FIG5_RUNS
    return [matrix[i] for i in ids]
