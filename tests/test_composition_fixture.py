"""Refactors keep behaviour: every run of the matrix composes to the config it composed to when the fixture was
written (tests/fixtures/composed_digests.json: run digests, pgd.provenance, per profile).

A deliberate change of what runs compose to (a new default, a profile edit) changes digests: regenerate the fixture
with `PGD_UPDATE_FIXTURES=1 pytest tests/test_composition_fixture.py` and commit it with the change, so the diff
shows which runs it reaches."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pgd.matrix import load_matrix
from pgd.provenance import expected_digests

FIXTURE = Path(__file__).parent / "fixtures" / "composed_digests.json"
PROFILES = ("mini", "paper")


def current() -> dict[str, dict[str, str]]:
    m = load_matrix()
    return {p: {name: e.digest for name, e in expected_digests(m, [0], p).items()} for p in PROFILES}


def test_matrix_composes_as_the_fixture_records():
    now = current()
    if os.environ.get("PGD_UPDATE_FIXTURES"):
        FIXTURE.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {FIXTURE}")
    recorded = json.loads(FIXTURE.read_text())
    for profile in PROFILES:
        changed = sorted(n for n in set(now[profile]) | set(recorded[profile])
                         if now[profile].get(n) != recorded[profile].get(n))
        assert not changed, (f"{profile}: {len(changed)} run(s) compose differently than recorded: {changed[:8]}; "
                             "if intended, regenerate the fixture (module docstring)")
