"""`pgd status`: one line per run of a profile - done / stale (which keys changed) / running / failed / missing.

Reads only: the run directories (metrics.json, provenance.json, the job log) and Snakemake's own state in
``<directory>/.snakemake`` (a job's incomplete marker, and the output locks a live Snakemake holds). The expected
digests come from the current configuration, as the workflow computes them (pgd.provenance), with the workflow
settings of ``workflow/config/default.yaml`` + ``<profile>.yaml`` and ``--config KEY=VALUE`` on top, as for
``snakemake --config``.
"""
from __future__ import annotations

import argparse
import base64
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pgd.matrix import load_matrix, repo_root, run_dir, with_extras
from pgd.provenance import Settings, expected_digests, staleness
from pgd.workflow_config import check_config

STATES = ("done", "stale", "running", "failed", "missing")


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: str
    detail: str = ""


def workflow_config(profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Snakemake config the workflow would see: default.yaml, <profile>.yaml, then ``--config`` values."""
    root = repo_root() / "workflow" / "config"
    cfg: dict[str, Any] = {}
    for path in (root / "default.yaml", root / f"{profile}.yaml"):
        if not path.is_file():
            raise SystemExit(f"pgd status: error: no workflow config {path} (profile {profile!r})")
        cfg.update(yaml.safe_load(path.read_text()) or {})
    cfg.update(overrides or {})
    cfg["profile"] = profile
    # the schema Snakemake checks: a mistyped --config key is named here as there
    check_config(cfg, repo_root() / "workflow" / "schemas" / "config.schema.yaml")
    return cfg


def _snakemake_key_path(state_dir: Path, key: str) -> Path:
    # Snakemake's file persistence: one file per output, named by the urlsafe base64 of the output path, cut into
    # '@'-prefixed directory levels where longer than a file name may be
    b64 = base64.urlsafe_b64encode(key.encode()).decode()
    parts = [b64[i:i + 254] for i in range(0, len(b64), 254)]
    return state_dir.joinpath(*(["@" + p for p in parts[:-1]] + [parts[-1]]))


def _locked_outputs(state_dir: Path) -> set[str]:
    out: set[str] = set()
    for lock in (state_dir / "locks").glob("*.output.lock"):
        try:
            out |= {ln.strip() for ln in lock.read_text().splitlines() if ln.strip()}
        except OSError:
            continue
    return out


def _keys(path: Path, directory: Path) -> list[str]:
    """The spellings Snakemake may have used for an output: as given (relative to its directory) or absolute."""
    keys = [str(path)]
    try:
        keys.append(str(path.resolve().relative_to(directory.resolve())))
    except ValueError:
        pass
    keys.append(str(path.resolve()))
    return list(dict.fromkeys(keys))


def run_status(name: str, run_path: Path, log: Path, expected, snakemake_dir: Path, directory: Path,
               locked: set[str]) -> RunStatus:
    model = run_path / "model.pth"
    keys = _keys(model, directory)
    incomplete = any(_snakemake_key_path(snakemake_dir / "incomplete", k).is_file() for k in keys)
    if incomplete and any(k in locked for k in keys):
        return RunStatus(name, "running", f"log {log}")
    if incomplete:
        return RunStatus(name, "failed", f"interrupted (rerun with --rerun-incomplete); log {log}")
    if (run_path / "metrics.json").is_file():
        stale = staleness(run_path, expected, name)
        return RunStatus(name, "done") if stale is None else RunStatus(name, "stale", stale.describe(limit=4))
    if log.is_file():
        return RunStatus(name, "failed", f"log {log}")
    return RunStatus(name, "missing")


def collect(profile: str, config: dict[str, Any], directory: Path) -> list[RunStatus]:
    matrix_path = Path(config["matrix"])
    if not matrix_path.is_absolute():
        matrix_path = repo_root() / matrix_path
    matrix = with_extras(load_matrix(matrix_path))   # the extra methods too: `snakemake extras` trains them
    seeds = config["seeds"]
    results = Path(config["results"])
    if not results.is_absolute():
        results = directory / results
    expected = expected_digests(matrix, seeds, profile,
                                Settings(config.get("train_args") or "", config.get("teacher_iters")))
    snakemake_dir = directory / ".snakemake"
    locked = _locked_outputs(snakemake_dir)
    out = []
    for inst in matrix.teacher_instances(seeds) + matrix.student_instances(seeds):
        path = run_dir(profile, inst.run.id, inst.seed, results)
        log = results / profile / "logs" / "train" / f"{inst.name}.log"
        out.append(run_status(inst.name, path, log, expected[inst.name], snakemake_dir, directory, locked))
    return out


def _parse_config(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"pgd status: error: --config expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)   # as snakemake --config parses values
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pgd status", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="mini", help="mini | paper (default %(default)s)")
    p.add_argument("--config", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="workflow settings as given to `snakemake --config` (results, matrix, seeds, train_args, "
                        "teacher_iters)")
    p.add_argument("--directory", default=".", help="Snakemake's working directory (holding .snakemake/; "
                                                    "default: the current one)")
    p.add_argument("--only", choices=STATES, nargs="+", help="list only runs in these states")
    a = p.parse_args(argv)
    config = workflow_config(a.profile, _parse_config(a.config))
    rows = collect(a.profile, config, Path(a.directory))
    width = max((len(r.name) for r in rows), default=0)
    for r in rows:
        if a.only is None or r.state in a.only:
            print(f"{r.name:<{width}}  {r.state:<8} {r.detail}".rstrip())
    counts = Counter(r.state for r in rows)
    print(f"{len(rows)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
