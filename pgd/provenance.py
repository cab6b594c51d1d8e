"""Run identity: a stable digest of everything that determines a run's result (docs/pipeline.md, "Provenance").

A run's result is fixed by its composed config (matrix row, profile, method config, dataset config, seed,
overrides), the pretraining recipe its backbone starts from, and its teacher. :func:`run_recipe` reduces a
composed config to exactly that: locations (work dir, data root, pretrained-weights dir, the teacher's files) are
replaced by what they stand for, so a relocated results tree keeps its digests, and the teacher enters through its
own digest, so retraining a teacher differently changes every student's. :func:`digest` hashes the recipe's
canonical JSON (sorted keys): independent of dict order, and comments never reach a parsed config.

The workflow makes the digest a param of the training rules, so an edit reruns exactly the runs whose recipe it
changes and, through their outputs, everything downstream. ``pgd train`` writes ``provenance.json`` into the run
directory (digest, recipe, git commit and dirty flag) and the digest into config.py's ``run_info`` and the MLflow
run's tags; ``pgd eval`` copies digest and commit into metrics.json. ``pgd table`` / ``pgd report`` / ``pgd status``
recompute the expected digests from the current configuration and compare.

Not in the digest: the project's code (a code change reruns nothing by itself: ``snakemake --forcerun <rule>``),
and the generated data and pretrained weights themselves, which Snakemake tracks as files (their rules carry their
own recipes as params, and a regenerated file reruns everything after it).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pgd.atomic import atomic_write_text
from pgd.errors import UserError
from pgd.run_layout import to_plain

PROVENANCE_FILE = "provenance.json"
METRICS_PROVENANCE = ("digest", "commit", "dirty", "threads")    # the keys metrics.json repeats
DIGEST_CHARS = 16
# stand-ins for locations in a recipe
DATA_ROOT = "<data_root>"
PRETRAINED_DIR = "<pretrained_dir>"
# environment of the workflow's jobs that changes what a run composes to (docs/pipeline.md)
TRAIN_ARGS_ENV = "PGD_TRAIN_ARGS"
TEACHER_ITERS_ENV = "PGD_MINI_TEACHER_ITERS"


def canonical_json(obj: Any) -> str:
    return json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=repr)


def digest(recipe: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(recipe).encode()).hexdigest()[:DIGEST_CHARS]


def _replace_prefix(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, dict):
        return {k: _replace_prefix(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_prefix(v, old, new) for v in obj]
    if isinstance(obj, str) and (obj == old or obj.startswith(old + "/")):
        return new + obj[len(old):]
    return obj


def _data_roots(cfg: dict) -> list[str]:
    roots = []
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        root = ((cfg.get(key) or {}).get("dataset") or {}).get("data_root")
        if isinstance(root, str) and root:
            roots.append(root.rstrip("/"))
    # longest first, so that a root nested in another is replaced as itself
    return sorted(set(roots), key=len, reverse=True)


def run_recipe(cfg: Mapping[str, Any], pretrain: Mapping[str, Any] | None = None,
               teacher_digest: str | None = None) -> dict[str, Any]:
    """What determines a run's result, from its composed config (``compose_config``'s output, before the runtime
    settings of ``pgd train``: launcher, MLflow, resume).

    ``pretrain``: the profile's pretraining recipe, kept where the backbone starts from a local pretrained
    checkpoint. ``teacher_digest``: the teacher's digest for a distilled run (its files' paths are dropped).
    """
    from pgd.config import local_pretrained_checkpoint

    d = to_plain(cfg.to_dict() if hasattr(cfg, "to_dict") else copy.deepcopy(dict(cfg)))
    for key in ("work_dir", "run_info"):
        d.pop(key, None)
    # the matrix row's method_overrides as written: their effect is in the model config already, and a row that
    # only restates a default (init_student: false for a method that never inherits) is the same run
    (d.get("pgd") or {}).pop("method_overrides", None)
    for root in _data_roots(d):
        d = _replace_prefix(d, root, DATA_ROOT)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = (d.get(key) or {}).get("dataset") or {}
        if isinstance(dataset.get("data_root"), str):
            dataset["data_root"] = DATA_ROOT  # with or without its trailing slash: the same folder
    model = d.get("model") or {}
    if "teacher" in model:
        model["teacher"] = {"digest": teacher_digest}
    if isinstance(model.get("teacher_cache"), dict):
        model["teacher_cache"]["file"] = "<teacher>/" + Path(model["teacher_cache"]["file"]).name
    detector = model.get("student") or model
    backbone = detector.get("backbone") or {}
    local = local_pretrained_checkpoint(backbone)
    if local is not None:
        backbone["init_cfg"]["checkpoint"] = f"{PRETRAINED_DIR}/{Path(local).name}"
    return {"config": d, "pretrain": to_plain(pretrain) if local is not None and pretrain else None,
            "teacher": teacher_digest if "teacher" in model else None}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (list items by index) -> leaf values: what a changed-key report names."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj:
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each leaf that differs between two recipes, sorted by key."""
    a, b = flatten(to_plain(old)), flatten(to_plain(new))
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = lambda v: "(absent)" if v is missing else json.dumps(v, default=repr)  # noqa: E731
            out.append(f"{key}: {show(va)} -> {show(vb)}")
    return out


# ---------------------------------------------------------------------------------------------- git

def git_state(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{'commit': sha or None, 'dirty': bool or None}`` of the checkout holding the code (None: not a git
    checkout). Dirty = tracked files differ from the commit (results/ is ignored)."""
    root = Path(root) if root else Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


# ---------------------------------------------------------------------------------------------- run directories

def write_provenance(run_dir: str | os.PathLike, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``<run_dir>/provenance.json``: digest, recipe, git state, time, CPU threads. Returns the record.

    The thread count is not part of the recipe (the digest): it is where a job runs, not what it computes by
    intent. It is recorded because it changes the numbers: the summation order of CPU kernels follows the threads,
    and over a 4050-iteration schedule that moves a teacher's AP by several points (docs/pipeline.md, "Threads change the numbers")."""
    import torch

    record = {"digest": digest(recipe), **git_state(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": torch.get_num_threads(),
              "recipe": to_plain(recipe)}
    atomic_write_text(Path(run_dir) / PROVENANCE_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def read_provenance(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's provenance.json, or None when it has none (or an unreadable one)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("digest"), str) else None


def recorded_digest(run_dir: str | os.PathLike) -> str | None:
    record = read_provenance(run_dir)
    return record["digest"] if record else None


def metrics_provenance(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What metrics.json carries of the run's provenance: digest, commit, dirty, threads."""
    record = read_provenance(run_dir)
    return {k: record.get(k) for k in METRICS_PROVENANCE} if record else None


# ---------------------------------------------------------------------------------------------- expected digests

def train_overrides(train_args: str) -> dict[str, Any]:
    """The ``--set KEY=VALUE`` overrides in the workflow's ``train_args`` string (its other words do not change
    what a run composes to)."""
    from pgd.cli_common import parse_overrides

    words = shlex.split(train_args or "")
    items = []
    for i, w in enumerate(words):
        if w == "--set" and i + 1 < len(words):
            items.append(words[i + 1])
        elif w.startswith("--set="):
            items.append(w[len("--set="):])
    return parse_overrides(items)


@dataclass(frozen=True)
class Expected:
    digest: str
    recipe: dict


@dataclass(frozen=True)
class Settings:
    """The workflow settings a run's composition depends on besides the matrix and the profile's files."""
    train_args: str = ""
    teacher_iters: int | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        """What the workflow's table / report jobs are told through their environment."""
        n = os.environ.get(TEACHER_ITERS_ENV)
        return cls(os.environ.get(TRAIN_ARGS_ENV, ""), int(n) if n and n.isdigit() else None)


class _env:
    """Set (or unset) environment variables for a block: mini.py reads $PGD_MINI_TEACHER_ITERS when parsed."""

    def __init__(self, **values: str | None):
        self.values, self.saved = values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pretrain_recipe(profile: str) -> dict[str, Any] | None:
    from pgd.config import load_profile

    recipe = load_profile(profile).get("pretrain")
    return to_plain(recipe) if recipe else None


def compose_instance(inst, profile: str, overrides: Mapping[str, Any] | None = None):
    """The config `pgd train --run <id> --seed <s>` composes for a matrix run instance, with stand-in teacher
    files (the recipe replaces them by the teacher's digest)."""
    from pgd.config import compose_config

    run = inst.run
    teacher = dict(config="<teacher>/config.py", checkpoint="<teacher>/model.pth") if run.method else None
    return compose_config(run.detector, run.backbone, profile, run.role, dataset=run.dataset, method=run.method,
                          method_overrides=dict(run.method_overrides or {}) or None, teacher=teacher,
                          seed=inst.seed, overrides=dict(overrides or {}))


def expected_digests(matrix, seeds: Iterable[int], profile: str,
                     settings: Settings | None = None) -> dict[str, Expected]:
    """Run name -> the digest and recipe the current configuration gives it, for every instance of the matrix."""
    settings = settings or Settings()
    overrides = train_overrides(settings.train_args)
    pretrain = pretrain_recipe(profile)
    seeds = list(seeds)
    out: dict[str, Expected] = {}
    teacher_env = None if settings.teacher_iters is None else str(settings.teacher_iters)
    for inst in matrix.teacher_instances(seeds):
        with _env(**{TEACHER_ITERS_ENV: teacher_env}):
            recipe = run_recipe(compose_instance(inst, profile, overrides), pretrain)
        out[inst.name] = Expected(digest(recipe), recipe)
    with _env(**{TEACHER_ITERS_ENV: None}):
        # a plain student can be another run's teacher (self-distillation): plain runs before distilled ones
        students = sorted(matrix.student_instances(seeds), key=lambda i: i.run.method is not None)
        for inst in students:
            teacher = matrix.teacher_of(inst)
            recipe = run_recipe(compose_instance(inst, profile, overrides), pretrain,
                                out[teacher.name].digest if teacher else None)
            out[inst.name] = Expected(digest(recipe), recipe)
    return out


# ---------------------------------------------------------------------------------------------- staleness

@dataclass(frozen=True)
class Staleness:
    name: str
    reason: str             # "no provenance" | "changed"
    changes: tuple[str, ...] = ()

    def describe(self, limit: int = 3) -> str:
        if self.reason == "no provenance":
            return "no provenance.json (trained before run digests were recorded, or outside pgd train)"
        shown = list(self.changes[:limit]) + ([f"... {len(self.changes) - limit} more"]
                                              if len(self.changes) > limit else [])
        return "; ".join(shown) or "digest differs"


def _metrics_digest(run_path: Path) -> str | None:
    try:
        prov = json.loads((Path(run_path) / "metrics.json").read_text()).get("provenance") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return prov.get("digest") if isinstance(prov, dict) else None


def staleness(run_path: str | os.PathLike, expected: Expected, name: str = "") -> Staleness | None:
    """None when the run's numbers come from the expected configuration: the digest metrics.json carries (else
    the one provenance.json records) equals the expected one. Changes are named from provenance.json's recipe."""
    record = read_provenance(run_path)
    measured = _metrics_digest(Path(run_path)) or (record or {}).get("digest")
    if measured is None:
        return Staleness(name, "no provenance")
    if measured == expected.digest:
        return None
    recipe = record.get("recipe") if record and record.get("digest") == measured else None
    return Staleness(name, "changed", tuple(changed_keys(recipe, expected.recipe)) if recipe else ())


class StaleRunsError(UserError, RuntimeError):
    """Metrics computed with another configuration than the current one."""


def stale_runs(names: Iterable[str], run_path, expected: Mapping[str, Expected]) -> list[Staleness]:
    """The stale runs among ``names`` (run_path: name -> run directory)."""
    out = []
    for name in dict.fromkeys(names):
        s = staleness(run_path(name), expected[name], name)
        if s is not None:
            out.append(s)
    return out


def stale_message(stale: list[Staleness], what: str) -> str:
    lines = [f"{what}: {len(stale)} run(s) were computed with another configuration than the current one:"]
    lines += [f"  {s.name}: {s.describe()}" for s in stale[:10]]
    if len(stale) > 10:
        lines.append(f"  ... and {len(stale) - 10} more (`pgd status` lists them all)")
    lines.append("Recompute them with `snakemake --cores all <target>` (the changed digests rerun exactly these), "
                 "or pass --allow-stale to render anyway with their cells marked.")
    return "\n".join(lines)


def check_stale(matrix, names: Iterable[str], profile: str, seeds: Iterable[int], results: str | os.PathLike,
                allow_stale: bool = False, settings: Settings | None = None, what: str = "") -> list[Staleness]:
    """The stale runs among ``names`` that have a metrics.json (missing runs are the caller's concern).

    Raises StaleRunsError naming them unless ``allow_stale``. ``settings`` default to what the workflow passes
    through the environment (Settings.from_env)."""
    from pgd.matrix import run_dir

    def path(name: str) -> Path:
        inst = matrix.by_name(name)
        return run_dir(profile, inst.run.id, inst.seed, results)

    present = [n for n in dict.fromkeys(names) if (path(n) / "metrics.json").is_file()]
    if not present:
        return []
    expected = expected_digests(matrix, seeds, profile, settings or Settings.from_env())
    stale = stale_runs(present, path, expected)
    if stale and not allow_stale:
        raise StaleRunsError(stale_message(stale, what or "tables"))
    return stale


def run_commits(matrix, names: Iterable[str], profile: str, results: str | os.PathLike) -> dict[str, str]:
    """Run name -> the commit its metrics were computed with ('unknown' without provenance; '+dirty' when the
    checkout had uncommitted changes), for the runs that have a metrics.json."""
    from pgd.matrix import run_dir

    out = {}
    for name in dict.fromkeys(names):
        inst = matrix.by_name(name)
        path = run_dir(profile, inst.run.id, inst.seed, results) / "metrics.json"
        try:
            prov = json.loads(path.read_text()).get("provenance") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        commit = (prov.get("commit") or "unknown")[:10] if isinstance(prov, dict) else "unknown"
        out[name] = commit + ("+dirty" if isinstance(prov, dict) and prov.get("dirty") else "")
    return out
