"""The `pgd` command line as a user meets it: --version, help texts that list choices and defaults, and
'did you mean' for mistyped commands, run ids, methods and detectors."""
from __future__ import annotations

import pytest

from pgd import __version__, cli
from pgd.suggest import closest, did_you_mean


def run(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:          # argparse's --help exits
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    assert run(capsys, "--version") == (0, f"pgd {__version__}\n", "")
    assert run(capsys, "-V")[1] == f"pgd {__version__}\n"


def test_unknown_command_suggests_the_close_ones(capsys):
    code, out, err = run(capsys, "trian")
    assert code == 2 and out == ""
    assert err.startswith("pgd: unknown command 'trian' (did you mean 'train'?)\n\nusage: pgd")
    # equally close candidates are all named
    assert run(capsys, "rport")[2].startswith("pgd: unknown command 'rport' (did you mean 'report'?)")
    assert run(capsys, "zzz")[2].startswith("pgd: unknown command 'zzz'\n")


def test_train_help_lists_methods_detectors_and_defaults(capsys):
    code, out, _ = run(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0
    from pgd.vocab import methods

    assert "KD method: " + " | ".join(methods()) in text
    assert "--detector DETECTOR fcos | autoassign | atss | gfl | ddod" in text
    from pgd.vocab import BACKBONES

    assert "--backbone BACKBONE " + " | ".join(BACKBONES) in text
    assert "(default none)" in text and "(default mini)" in text and "_s<seed> for seeds > 0 (default 0)" in text
    assert "--role student --method pgd --teacher-run atss_r101_teacher --work-dir D" in text


def test_data_help_shows_defaults(capsys):
    text = " ".join(run(capsys, "data", "coco", "--help")[1].split())
    assert "training images (default: 400)" in text and "validation images (default: 100)" in text
    assert "image side in pixels (default: 128)" in text and "(default: easy)" in text
    assert "output directory (default" not in text
    text = " ".join(run(capsys, "data", "crowdhuman", "--help")[1].split())
    assert "training images (default: 300)" in text and "image side in pixels (default: 160)" in text


def test_table_and_figure_help_describe_every_option(capsys):
    text = " ".join(run(capsys, "table", "--help")[1].split())
    assert "seeds averaged per cell" in text and "t6k (table6_k)" in text
    text = " ".join(run(capsys, "figure", "--help")[1].split())
    assert "1: foreground regions (Box, BoxGauss, FGFI, PGD) of the ATSS teacher" in text
    assert "3: the top-X% masking pilot" in text and "(default 4)" in text


def test_did_you_mean():
    assert closest("atts", ["fcos", "atss", "gfl"]) == ["atss"]
    assert did_you_mean("atts", ["fcos", "atss", "gfl"]) == " (did you mean 'atss'?)"
    # a clearly better match is named alone; matches about as close as the best are named with it
    assert did_you_mean("atss_r50_pdg", ["atss_r50_pgd", "atss_r50_fgd", "gfl_r50_ld"]) == " (did you mean 'atss_r50_pgd'?)"
    assert did_you_mean("atss_r50_xgd", ["atss_r50_pgd", "atss_r50_fgd"]) == (
        " (did you mean 'atss_r50_pgd' or 'atss_r50_fgd'?)")
    assert did_you_mean("zzz", ["pgd"]) == "" and did_you_mean(None, ["pgd"]) == ""


def test_unknown_run_method_and_detector_get_suggestions():
    from pgd.config import ConfigCompositionError, compose_config
    from pgd.matrix import MatrixError, load_matrix

    m = load_matrix()
    with pytest.raises(MatrixError, match=r"no run with id 'atss_r101_techer' \(did you mean 'atss_r101_teacher'"):
        m["atss_r101_techer"]
    with pytest.raises(MatrixError, match=r"neither a run id nor <run id>_s<seed> \(did you mean 'atss_r50_pgd_box'"):
        m.by_name("atss_r50_pgd_bx")
    with pytest.raises(ConfigCompositionError, match=r"unknown detector 'atts'; .* \(did you mean 'atss'\?\)$"):
        compose_config("atts", "r50", "mini", "student")
    with pytest.raises(ConfigCompositionError, match=r"unknown method 'pdg'; .* \(did you mean .*'pgd'"):
        compose_config("atss", "r50", "mini", "student", method="pdg")
