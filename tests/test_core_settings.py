"""PGDSettings: paper defaults, the official-code preset, overrides and validation."""
import pytest

from pgd.core import PGDSettings, PGWConfig
from pgd.core.settings import CODE_LEVEL_WEIGHTS


def test_paper_defaults():
    s = PGDSettings.paper("atss")
    assert (s.k, s.xi_cls, s.xi_reg, s.tau, s.delta) == (30, 0.8, 0.6, 0.8, 8e-4)
    assert (s.alpha, s.beta, s.gamma) == pytest.approx((0.08, 0.04, 0.128))   # "0.8" typo read as 0.08
    assert s.spatial_reduce == "sum" and s.topk_inside_box and not s.mix_masks_across_batch
    assert s.level_weights is None and s.reg_loss_norm == s.att_loss_norm == "paper"
    assert s.pgw_regulariser == "deterministic" and not s.swap_xy_anchor_free and not s.gfl_decode_stride_bug
    assert PGDSettings.paper("gfl").alpha == pytest.approx(0.04)   # the paper groups GFL as anchor-free
    assert PGDSettings.paper("fcos").beta == pytest.approx(0.02)


@pytest.mark.parametrize("detector,k,tau,alpha,swap,gfl_bug", [
    ("atss", 9, 0.8, 0.08, False, False),
    ("gfl", 30, 0.8, 0.04, False, True),
    ("fcos", 30, 0.8, 0.04, True, False),
    ("autoassign", 30, 0.4, 0.08, True, False),
    ("ddod", 30, 0.8, 0.08, False, False),
])
def test_official_code_preset(detector, k, tau, alpha, swap, gfl_bug):
    s = PGDSettings.official_code(detector)
    assert (s.k, s.tau, s.swap_xy_anchor_free, s.gfl_decode_stride_bug) == (k, tau, swap, gfl_bug)
    assert s.alpha == pytest.approx(alpha) and s.gamma == pytest.approx(1.6 * alpha)
    assert s.spatial_reduce == "mean" and not s.topk_inside_box and s.mix_masks_across_batch
    assert s.level_weights == CODE_LEVEL_WEIGHTS and s.reg_loss_norm == s.att_loss_norm == "code"
    assert s.pgw_config() == PGWConfig(topk_inside_box=False, regulariser="noise", swap_xy=swap)


def test_official_variants_and_from_dict():
    assert PGDSettings.official_code("atss", backbone="mbv2").alpha == pytest.approx(0.04)
    assert PGDSettings.official_code("ddod", dataset="crowdhuman").alpha == pytest.approx(0.001)
    s = PGDSettings.from_dict({"preset": "code", "detector": "fcos", "k": 15, "pgw_regulariser": "deterministic"})
    assert s.k == 15 and s.swap_xy_anchor_free and s.pgw_regulariser == "deterministic"
    s = PGDSettings.from_dict({"detector": "atss", "alpha": 0.03})
    assert (s.alpha, s.beta, s.gamma) == pytest.approx((0.03, 0.015, 0.048))
    assert PGDSettings.from_dict({"alpha": 0.03, "beta": 0.1}).beta == 0.1


@pytest.mark.parametrize("bad,match", [
    ({"k": 0}, "k must"), ({"xi_cls": 1.2}, "xi_cls"), ({"tau": 0}, "tau"), ({"fg_strategy": "gauss"}, "fg_strategy"),
    ({"spatial_reduce": "max"}, "spatial_reduce"), ({"reg_loss_norm": "x"}, "reg_loss_norm"),
    ({"pgw_regulariser": "jitter"}, "pgw_regulariser"), ({"alpha": -1.0}, "alpha"), ({"detector": "yolo"}, "detector"),
])
def test_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        PGDSettings(**bad)


def test_unknown_override_and_preset():
    with pytest.raises(ValueError, match="unknown setting"):
        PGDSettings.paper().replace(topk=5)
    with pytest.raises(ValueError, match="preset"):
        PGDSettings.from_dict({"preset": "fgd"})
    with pytest.raises(ValueError, match="detector"):
        PGDSettings.official_code("retinanet")
    with pytest.raises(ValueError, match="level_weights"):
        PGDSettings.paper(level_weights=(1.0,)).level_weight(3)


def test_core_is_pure_torch():
    import subprocess
    import sys

    code = ("import sys, pgd.core, pgd.core.regions, pgd.core.imitation; "
            "bad = [m for m in ('mmdet', 'mmcv', 'mmengine') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "pgd.core imported an mm* package"
