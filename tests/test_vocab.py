"""pgd.vocab: one vocabulary, derived from the config files and the code, that every module uses."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from pgd import config, matrix, vocab
from pgd.core import settings


def test_detectors_and_backbones_are_the_config_files():
    files = {p.stem for p in (vocab.config_root() / "detectors").glob("*.py")}
    assert files == {f"{d}_{b}" for d in vocab.DETECTORS for b in vocab.BACKBONES}
    assert set(vocab.BACKBONES) == {"r101", "r50", "mbv2"}


def test_methods_are_the_distill_configs():
    files = tuple(sorted(p.stem for p in (config.config_root() / "distill").glob("*.py")))
    assert vocab.methods() == files   # a new method is its config file: no list to extend
    assert {"defeat", "fgd", "fgfi", "fkd", "frs", "ld", "pgd"} <= set(files)
    assert matrix.METHODS == vocab.methods() and config.available_methods() == list(vocab.methods())


def test_every_module_uses_the_same_names():
    assert matrix.DETECTORS is config.DETECTORS is settings.DETECTORS is vocab.DETECTORS
    assert matrix.BACKBONES is config.BACKBONES is vocab.BACKBONES
    assert matrix.FG_STRATEGIES is settings.FG_STRATEGIES and matrix.BRANCHES is settings.BRANCHES
    from pgd.losses import pgd_loss

    assert pgd_loss.BRANCHES is settings.BRANCHES


def _registered_kd_losses():
    import pgd.losses  # noqa: F401
    from mmdet.registry import MODELS

    from pgd.losses.base import BaseKDLoss

    return {name: cls for name, cls in MODELS.module_dict.items()
            if isinstance(cls, type) and issubclass(cls, BaseKDLoss)}


def test_kd_loss_keywords_read_from_source_equal_the_signatures():
    """The source reading (no mmdet import at matrix load) agrees with inspect on the registered classes."""
    losses = _registered_kd_losses()
    assert set(vocab.kd_loss_types()) == set(losses)
    for name, cls in losses.items():
        params = inspect.signature(cls).parameters
        named = {p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
        keys = vocab.kd_loss_keywords(name) - {"taps"}   # every loss config may name its taps (pgd.models.taps)
        assert named <= keys, name
        if any(v.kind is v.VAR_KEYWORD for v in params.values()):   # PGDLoss(**settings): PGDSettings' fields
            assert keys - named == ({f.name for f in dataclasses.fields(settings.PGDSettings)}
                                    | {"backbone", "dataset"}) - named
        else:
            assert keys == named, name
        assert vocab.kd_loss_detectors(name) == (cls.supported_detectors
                                                 if cls.supported_detectors != settings.DETECTORS else None)


def test_method_override_keys_route_to_the_distiller_or_the_loss():
    keys = config.method_override_keys("fgd")
    assert keys["alpha_fg"] == "FGDLoss" and keys["init_student"] == "DistillDetector"
    import pgd.models  # noqa: F401
    from mmdet.registry import MODELS

    distiller = inspect.signature(MODELS.get("DistillDetector")).parameters
    assert set(config.DISTILLER_KEYS) <= set(distiller)
    assert {"preset", "k", "alpha", "branches", "fg_strategy"} <= set(config.method_override_keys("pgd"))
    assert matrix.method_detectors("ld") == ("gfl",) and matrix.method_detectors("pgd") is None


def test_unknown_override_suggests_the_close_key():
    with pytest.raises(config.ConfigCompositionError, match=r"no option 'alhpa_fg' \(did you mean 'alpha_fg'\?\)"):
        config.check_method_overrides("fgd", {"alhpa_fg": 1.0})
