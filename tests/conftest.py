"""Session-wide test setup.

The mini profile loads every backbone from `pgd pretrain`'s checkpoints ($PGD_PRETRAINED_DIR, default
results/mini/pretrained). Tests must not depend on a user's results folder nor pay for real pretraining, so the
session points $PGD_PRETRAINED_DIR at checkpoints of freshly initialised backbones, written once, in the format
`pgd pretrain` writes (tests/test_pretrain.py checks that format against a real, short pretraining run).
Subprocesses (pgd train, snakemake) inherit the variable.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Property tests draw the same examples on every run and keep no example database in the checkout: the suite that
# decides a CI run must give the same answer twice. Generation time is wall time, which a busy machine inflates,
# so too_slow is no signal here. `pytest --hypothesis-profile=explore` draws fresh examples for a search.
settings.register_profile("pgd", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", parent=settings.get_profile("pgd"), derandomize=False)
settings.load_profile("pgd")


@pytest.fixture(scope="session", autouse=True)
def pretrained_backbones(tmp_path_factory):
    import logging

    import torch
    from mmengine.logging import MMLogger

    from pgd.checkpoint import save_checkpoint
    from pgd.pretrain import build_classifier

    directory = tmp_path_factory.mktemp("pretrained")
    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)
    for backbone in ("r50", "r101", "mbv2"):
        torch.manual_seed(0)
        net = build_classifier(backbone).backbone
        save_checkpoint(dict(state_dict=net.state_dict(), meta=dict(backbone=backbone, source="tests")),
                        directory / f"{backbone}.pth")
    saved = os.environ.get("PGD_PRETRAINED_DIR")
    os.environ["PGD_PRETRAINED_DIR"] = str(directory)
    yield directory
    if saved is None:
        os.environ.pop("PGD_PRETRAINED_DIR", None)
    else:
        os.environ["PGD_PRETRAINED_DIR"] = saved
