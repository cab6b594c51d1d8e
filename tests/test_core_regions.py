"""Background mask and the Table 5 foreground strategies on hand-computed cases."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde

from pgd.core import FG_STRATEGIES, PGWConfig, background_mask, foreground_importance, pgw_importance

torch.set_num_threads(1)

# 3 x 3 grid, stride 8: index = 3*row + col, location (4 + 8 col, 4 + 8 row)
POINTS = torch.tensor([[4.0 + 8 * c, 4.0 + 8 * r] for r in range(3) for c in range(3)])
ONE = torch.tensor([[True]])


def box(*xyxy):
    return torch.tensor([[list(xyxy)]], dtype=torch.float32)


def test_background_mask():
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [16.0, 16.0, 24.0, 24.0], [0, 0, 24, 24]]])
    valid = torch.tensor([[True, True, False]])      # the padded full-image box must not count
    bg = background_mask(POINTS, boxes, valid)
    assert bg[0].tolist() == [0, 0, 1, 0, 0, 1, 1, 1, 0]
    loc_valid = torch.ones(1, 9, dtype=torch.bool)
    loc_valid[0, 2] = False
    assert background_mask(POINTS, boxes, valid, valid=loc_valid)[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0]
    # no objects: everything is background
    assert background_mask(POINTS, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool)).sum() == 9


def test_box_strategy():
    imp = foreground_importance("box", POINTS, box(0, 0, 16, 16), ONE)
    assert imp[0].tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0]


def test_boxgauss_strategy():
    # box [0,0,24,16]: centre (12, 8), sigma = (12, 8); inside: rows 0-1
    imp = foreground_importance("boxgauss", POINTS, box(0, 0, 24, 16), ONE)
    corner = math.exp(-(64 / 288 + 16 / 128))   # dx = 8, dy = 4
    middle = math.exp(-16 / 128)                # dx = 0, dy = 4
    assert imp[0].tolist() == pytest.approx([corner, middle, corner, corner, middle, corner, 0, 0, 0])


def test_centre_strategy_and_fallback():
    # box [0,0,24,24]: central region [9.6, 14.4]^2 holds only (12, 12)
    assert foreground_importance("centre", POINTS, box(0, 0, 24, 24), ONE)[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    # box [6,6,15,15]: centre (10.5, 10.5), central region [9.6, 11.4]^2 holds no location -> nearest = (12, 12)
    assert foreground_importance("centre", POINTS, box(6, 6, 15, 15), ONE)[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    # box [5,5,11,11]: centre (8, 8) equidistant from 4 locations -> the first one, (4, 4)
    assert foreground_importance("centre", POINTS, box(5, 5, 11, 11), ONE)[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    # padded objects contribute nothing
    assert foreground_importance("centre", POINTS, box(5, 5, 11, 11), ~ONE).sum() == 0


def _q(values):
    return torch.tensor([[values]], dtype=torch.float32)


Q = _q([0.1, 0.5, 0.9, 0.3, 0.8, 0.2, 0.05, 0.6, 0.7])


def test_quality_strategy_keeps_inside_only():
    imp = foreground_importance("quality", POINTS, box(0, 0, 16, 16), ONE, quality=Q)
    assert imp[0].tolist() == pytest.approx([0.1, 0.5, 0, 0.3, 0.8, 0, 0, 0, 0])


def test_topkeq_strategy():
    imp = foreground_importance("topkeq", POINTS, box(0, 0, 24, 24), ONE, quality=Q, k=3)
    assert imp[0].tolist() == [0, 0, 1, 0, 1, 0, 0, 0, 1]          # q = 0.9, 0.8, 0.7
    imp = foreground_importance("topkeq", POINTS, box(0, 0, 16, 16), ONE, quality=Q, k=3)
    assert imp[0].tolist() == [0, 1, 0, 1, 1, 0, 0, 0, 0]          # inside only: 0.8, 0.5, 0.3


def test_kde_strategy_matches_scipy():
    k = 5
    imp = foreground_importance("kde", POINTS, box(0, 0, 24, 24), ONE, quality=Q, k=k,
                                cfg=PGWConfig(regulariser="none"))
    chosen = [2, 4, 8, 7, 1]                                          # the top-5 by quality
    xy = POINTS[chosen].double().numpy().T
    density = gaussian_kde(xy, bw_method="scott")(xy)
    expected = np.zeros(9)
    expected[chosen] = density / density.max()
    assert imp[0].double().numpy() == pytest.approx(expected, rel=1e-5)
    assert imp.max().item() == pytest.approx(1.0)


def test_kde_collinear_candidates_are_defined():
    imp = foreground_importance("kde", POINTS, box(0, 0, 24, 8), ONE, quality=Q, k=3)   # one row: a line
    assert torch.isfinite(imp).all() and imp.max().item() == pytest.approx(1.0) and (imp > 0).sum() == 3


def test_pgw_strategy_is_pgw():
    assert torch.equal(foreground_importance("pgw", POINTS, box(0, 0, 24, 24), ONE, quality=Q, k=4),
                       pgw_importance(Q, POINTS, box(0, 0, 24, 24), ONE, 4))


@pytest.mark.parametrize("strategy", FG_STRATEGIES)
def test_every_strategy_in_unit_range_and_zero_without_objects(strategy):
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 24.0], [8.0, 8.0, 24.0, 20.0]]]).expand(2, 2, 4)
    quality = torch.rand(2, 2, 9, generator=g)
    valid = torch.tensor([[True, True], [False, False]])
    imp = foreground_importance(strategy, POINTS, boxes, valid, quality=quality, k=4)
    assert imp.shape == (2, 9) and imp.min() >= 0 and imp.max() <= 1 and imp[0].max() > 0
    assert imp[1].abs().sum() == 0
    loc_valid = torch.ones(2, 9, dtype=torch.bool)
    loc_valid[:, 4] = False
    masked = foreground_importance(strategy, POINTS, boxes, valid, quality=quality, k=4, valid=loc_valid)
    assert masked[:, 4].abs().sum() == 0


def test_dispatcher_errors():
    with pytest.raises(ValueError, match="unknown strategy"):
        foreground_importance("gauss", POINTS, box(0, 0, 8, 8), ONE)
    with pytest.raises(ValueError, match="needs the quality"):
        foreground_importance("kde", POINTS, box(0, 0, 8, 8), ONE)
