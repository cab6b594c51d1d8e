"""PGW (Eqs. 2-4): hand-computed cases, properties, degenerate inputs, and parity with loop references."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgd.core import (PGDSettings, PGWConfig, inside_boxes, normalise_by_count, pgw_importance, split_levels,
                      topk_candidates)
from pgd.core.settings import NOISE_VARIANCE

torch.set_num_threads(1)
EPS = NOISE_VARIANCE  # the deterministic regulariser, 0.05^2 / 3 px^2
NONE = PGWConfig(regulariser="none")
CODE = PGWConfig(topk_inside_box=False)


def grid_points(level_sizes, strides, offset=0.5):
    pts = []
    for (h, w), s in zip(level_sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        pts.append(torch.stack([(xs.flatten() + offset) * s, (ys.flatten() + offset) * s], -1))
    return torch.cat(pts)


P3x3 = grid_points([(3, 3)], [8])  # (4,4) (12,4) (20,4) / (4,12) (12,12) (20,12) / (4,20) (12,20) (20,20)
FULL_BOX = torch.tensor([[[0.0, 0.0, 24.0, 24.0]]])
ONE = torch.tensor([[True]])


def _quality(order):
    """Quality (1, 1, 9) that ranks the given grid indices first, in that order."""
    q = torch.zeros(1, 1, 9)
    for rank, a in enumerate(order):
        q[0, 0, a] = 1.0 - 0.1 * rank
    return q


# ---------------------------------------------------------------------------------------------- hand cases
def test_plus_shape_hand_values():
    # top-5 = the plus: centre (12,12) and its 4 neighbours at distance 8.
    # mu = (12, 12); Sigma = diag(2*64/5, 2*64/5) = diag(25.6, 25.6); d^T Sigma^-1 d = 64/25.6 = 2.5
    q = _quality([4, 1, 3, 5, 7])
    imp = pgw_importance(q, P3x3, FULL_BOX, ONE, k=5, cfg=NONE)
    e = math.exp(-1.25)
    assert imp[0].tolist() == pytest.approx([0, e, 0, e, 1, e, 0, e, 0])
    # with the deterministic regulariser Sigma = diag(25.6 + eps)
    imp = pgw_importance(q, P3x3, FULL_BOX, ONE, k=5)
    assert imp[0, 1].item() == pytest.approx(math.exp(-0.5 * 64 / (25.6 + EPS)), rel=1e-6)
    # Eq. 4: 5 non-zero pixels on the level -> divided by 5 (not by the sum of the weights)
    m = normalise_by_count(split_levels(pgw_importance(q, P3x3, FULL_BOX, ONE, k=5, cfg=NONE), [(3, 3)])[0])
    assert m[0].flatten().tolist() == pytest.approx([0, e / 5, 0, e / 5, 1 / 5, e / 5, 0, e / 5, 0])


def test_three_points_correlated_covariance():
    # candidates (4,4) (12,4) (4,12): mu = (20/3, 20/3), Sigma = [[128, -64], [-64, 128]] / 9,
    # Sigma^-1 = [[3/32, 3/64], [3/64, 3/32]]; every candidate has d^T Sigma^-1 d = 2 -> weight e^-1
    q = _quality([0, 1, 3])
    idx, fitted, kept = topk_candidates(q, P3x3, FULL_BOX, ONE, 3, NONE)
    assert sorted(idx[0, 0].tolist()) == [0, 1, 3] and fitted.all() and kept.all()
    imp = pgw_importance(q, P3x3, FULL_BOX, ONE, k=3, cfg=NONE)
    assert imp[0].tolist() == pytest.approx([math.exp(-1), math.exp(-1), 0, math.exp(-1), 0, 0, 0, 0, 0])


def test_max_over_objects_and_levels():
    # two levels: P3 3x3 (stride 8) and P4 1x1 at (8, 8) (stride 16); candidate sets per object:
    # object A (box [0,0,24,24]) top-2 = (4,4) [P3] and (8,8) [P4]: collinear along (1,1), see the degenerate test
    # object B (box [0,0,16,16]) top-1 = (8,8) [P4] -> weight 1; the max over objects gives 1 at (8,8).
    points = torch.cat([P3x3, torch.tensor([[8.0, 8.0]])])
    boxes = torch.tensor([[[0.0, 0.0, 24.0, 24.0], [0.0, 0.0, 16.0, 16.0]]])
    q = torch.zeros(1, 2, 10)
    q[0, 0, 0], q[0, 0, 9] = 0.9, 0.8
    q[0, 1, 9] = 0.9
    imp = pgw_importance(q, points, boxes, torch.tensor([[True, True]]), k=1, cfg=NONE)
    assert imp[0].tolist() == [1.0] + [0.0] * 8 + [1.0]
    q[0, 1, 4] = 0.5                             # B's second candidate: (12, 12)
    imp = pgw_importance(q, points, boxes, torch.tensor([[True, True]]), k=2)
    # each object's pair lies on the (1,1) diagonal: Sigma = [[4, 4], [4, 4]] + eps I, d = +-(2, 2):
    # d^T Sigma^-1 d = 8 / (8 + eps); (8,8) gets the same weight from both objects
    w = math.exp(-0.5 * 8 / (8 + EPS))
    assert imp[0].tolist() == pytest.approx([w, 0, 0, 0, w, 0, 0, 0, 0, w], rel=1e-6)
    levels = split_levels(imp, [(3, 3), (1, 1)])
    assert [tuple(x.shape) for x in levels] == [(1, 3, 3), (1, 1, 1)]


# ---------------------------------------------------------------------------------------------- degenerate inputs
def test_no_objects_gives_zeros():
    q = torch.rand(2, 3, 9)
    boxes = FULL_BOX.expand(2, 3, 4)
    assert pgw_importance(q, P3x3, boxes, torch.zeros(2, 3, dtype=torch.bool), k=4).abs().sum() == 0
    empty = pgw_importance(torch.zeros(2, 0, 9), P3x3, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), 4)
    assert empty.shape == (2, 9) and empty.abs().sum() == 0
    assert normalise_by_count(torch.zeros(2, 3, 3)).abs().sum() == 0


def test_fewer_than_k_inside_paper_vs_code():
    # box [8,8,16,16] holds only (12,12) (index 4). Ranking (no indicator): 4 > 5 (20,12) > 8 (20,20)
    box = torch.tensor([[[8.0, 8.0, 16.0, 16.0]]])
    q = _quality([4, 5, 8])
    paper = pgw_importance(q, P3x3, box, ONE, k=3)
    assert paper[0].tolist() == [0, 0, 0, 0, 1.0, 0, 0, 0, 0]      # one candidate inside: weight 1
    idx, fitted, kept = topk_candidates(q, P3x3, box, ONE, 3, PGWConfig())
    assert fitted.sum() == 1 and kept.sum() == 1
    # code: the Gaussian is fit to all three (each d^T Sigma^-1 d = 2), the two outside are zeroed after
    code = pgw_importance(q, P3x3, box, ONE, k=3, cfg=PGWConfig(topk_inside_box=False, regulariser="none"))
    assert code[0].tolist() == pytest.approx([0, 0, 0, 0, math.exp(-1), 0, 0, 0, 0])


def test_two_inside_points_line():
    # box [0,0,16,8] holds (4,4) and (12,4): on a horizontal line; Sigma = diag(16, 0) + eps I
    box = torch.tensor([[[0.0, 0.0, 16.0, 8.0]]])
    imp = pgw_importance(_quality([0, 1]), P3x3, box, ONE, k=30)
    assert imp[0, :2].tolist() == pytest.approx([math.exp(-0.5 * 16 / (16 + EPS))] * 2, rel=1e-6)
    assert imp[0, 2:].abs().sum() == 0
    # without a regulariser the singular covariance goes through adj / (det + 1e-10): still finite, weight 1
    # (the along-line component of adj is 0), i.e. the noise-free official algorithm is degenerate here
    raw = pgw_importance(_quality([0, 1]), P3x3, box, ONE, k=30, cfg=NONE)
    assert torch.isfinite(raw).all() and raw[0, :2].tolist() == [1.0, 1.0]


def test_all_candidates_on_one_point():
    # anchor-based grids put the P3 and P4 locations (16,16) on the same pixel
    points = torch.cat([grid_points([(3, 3)], [8], offset=0.0), grid_points([(2, 2)], [16], offset=0.0)])
    q = torch.zeros(1, 1, 13)
    q[0, 0, 8], q[0, 0, 12] = 0.9, 0.8                                  # both at (16, 16)
    box = torch.tensor([[[0.0, 0.0, 30.0, 30.0]]])
    for cfg in (PGWConfig(), NONE):
        imp = pgw_importance(q, points, box, ONE, k=2, cfg=cfg)
        assert imp[0, 8].item() == pytest.approx(1.0) and imp[0, 12].item() == pytest.approx(1.0)
        assert (imp > 0).sum() == 2
    # The official noise hack does not rescue this case: two noisy copies always lie on a line (rank-1 MLE),
    # so the noise-free candidates sit off that line and get a weight that depends on the draw (often 0).
    noisy = pgw_importance(q, points, box, ONE, k=2, cfg=PGWConfig(regulariser="noise"),
                           generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(noisy).all() and noisy.min() >= 0 and noisy.max() <= 1


def test_k_larger_than_locations_is_clamped():
    q = torch.rand(1, 1, 9)
    imp = pgw_importance(q, P3x3, FULL_BOX, ONE, k=1000)
    assert (imp > 0).sum() == 9
    idx, _, _ = topk_candidates(q, P3x3, FULL_BOX, ONE, 1000, PGWConfig())
    assert idx.shape == (1, 1, 9)


def test_invalid_locations_never_compete():
    q = _quality([4, 1, 3])
    valid = torch.ones(1, 9, dtype=torch.bool)
    valid[0, 4] = False
    imp = pgw_importance(q, P3x3, FULL_BOX, ONE, k=1, valid=valid)
    assert imp[0].tolist() == [0, 1.0, 0, 0, 0, 0, 0, 0, 0]


def test_noise_mode_is_seeded_and_close_to_deterministic():
    q = _quality([4, 1, 3, 5, 7])
    cfg = PGWConfig(regulariser="noise")
    a = pgw_importance(q, P3x3, FULL_BOX, ONE, k=5, cfg=cfg, generator=torch.Generator().manual_seed(3))
    b = pgw_importance(q, P3x3, FULL_BOX, ONE, k=5, cfg=cfg, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    det = pgw_importance(q, P3x3, FULL_BOX, ONE, k=5)
    assert torch.allclose(a, det, atol=0.02)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="k must"):
        pgw_importance(torch.rand(1, 1, 9), P3x3, FULL_BOX, ONE, k=0)
    with pytest.raises(ValueError, match="quality"):
        pgw_importance(torch.rand(1, 9), P3x3, FULL_BOX, ONE, k=3)
    with pytest.raises(ValueError, match="does not match"):
        pgw_importance(torch.rand(1, 1, 8), P3x3, FULL_BOX, ONE, k=3)
    with pytest.raises(ValueError, match="split_levels"):
        split_levels(torch.rand(1, 9), [(2, 2)])
    with pytest.raises(ValueError, match="regulariser"):
        PGWConfig(regulariser="jitter")


# ---------------------------------------------------------------------------------------------- random cases
LEVELS = [(8, 8), (4, 4), (2, 2)]
STRIDES = [8, 16, 32]
POINTS = grid_points(LEVELS, STRIDES)


def random_case(seed, n=2, m=4):
    g = torch.Generator().manual_seed(seed)
    xy1 = torch.rand(n, m, 2, generator=g) * 48
    wh = torch.rand(n, m, 2, generator=g) * 40 + 2
    boxes = torch.cat([xy1, (xy1 + wh).clamp(max=64)], -1)
    valid = torch.rand(n, m, generator=g) > 0.25
    quality = torch.rand(n, m, POINTS.shape[0], generator=g)
    return quality, boxes, valid


def loop_reference(quality, points, boxes, valid, k, inside_box, reg_var, swap=False):
    """Per image, per object, in float64 with torch.linalg.inv: what Eqs. 2-3 + max say."""
    n_img, m_obj, a = quality.shape
    out = torch.zeros(n_img, a, dtype=torch.float64)
    px, py = (points[:, 1], points[:, 0]) if swap else (points[:, 0], points[:, 1])
    for n in range(n_img):
        for m in range(m_obj):
            if not valid[n, m]:
                continue
            x1, y1, x2, y2 = boxes[n, m].tolist()
            inside = (px > x1) & (px < x2) & (py > y1) & (py < y2)
            pool = torch.nonzero(inside if inside_box else torch.ones_like(inside)).flatten().tolist()
            if not pool:
                continue
            chosen = sorted(pool, key=lambda i: -quality[n, m, i].item())[:k]
            xy = points[chosen].double()
            mu = xy.mean(0)
            d = xy - mu
            cov = d.T @ d / len(chosen) + reg_var * torch.eye(2, dtype=torch.float64)
            inv = torch.linalg.inv(cov)
            for row, i in enumerate(chosen):
                if inside[i]:
                    w = math.exp(-0.5 * float(d[row] @ inv @ d[row]))
                    out[n, i] = max(out[n, i].item(), w)
    return out.float()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 3, 9, 30]), inside_box=st.booleans(),
       indicator=st.booleans())
def test_parity_with_loop_reference(seed, k, inside_box, indicator):
    quality, boxes, valid = random_case(seed)
    if indicator and inside_box:   # Eq. 1 quality (zero outside the box): most objects take the top-K shortcut.
        # (The code setting ranks without the indicator; with it, its top-K would be decided by ties at 0.)
        quality = quality * inside_boxes(POINTS, boxes, valid)
    cfg = PGWConfig(topk_inside_box=inside_box)
    got = pgw_importance(quality, POINTS, boxes, valid, k, cfg)
    ref = loop_reference(quality, POINTS, boxes, valid, k, inside_box, EPS)
    assert torch.allclose(got, ref, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 5, 30]))
def test_properties(seed, k):
    quality, boxes, valid = random_case(seed, m=3)
    imp = pgw_importance(quality, POINTS, boxes, valid, k)
    assert imp.min() >= 0 and imp.max() <= 1
    # zero outside every (valid) box, at most K non-zero pixels per object
    px, py = POINTS[:, 0], POINTS[:, 1]
    for n in range(2):
        inside_any = torch.zeros(POINTS.shape[0], dtype=torch.bool)
        for m in range(3):
            if valid[n, m]:
                x1, y1, x2, y2 = boxes[n, m].tolist()
                inside_any |= (px > x1) & (px < x2) & (py > y1) & (py < y2)
        assert imp[n][~inside_any].abs().sum() == 0
        assert (imp[n] > 0).sum() <= k * int(valid[n].sum())
    single = pgw_importance(quality[:, :1], POINTS, boxes[:, :1], torch.ones(2, 1, dtype=torch.bool), k)
    assert ((single > 0).sum(1) <= k).all()
    # invariance to the order of the ground truths
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(imp, pgw_importance(quality[:, perm], POINTS, boxes[:, perm], valid[:, perm], k))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.sampled_from([(32, 0), (0, 32), (32, 32)]))
def test_translation_by_largest_stride_translates_mask(seed, shift):
    # a 128 x 128 image; objects and teacher predictions live in the top-left 64 x 64 and move by `shift`
    levels, strides = [(16, 16), (8, 8), (4, 4)], [8, 16, 32]
    points = grid_points(levels, strides)
    g = torch.Generator().manual_seed(seed)
    xy1 = torch.rand(1, 3, 2, generator=g) * 40
    boxes = torch.cat([xy1, xy1 + torch.rand(1, 3, 2, generator=g) * 22 + 2], -1)
    valid = torch.ones(1, 3, dtype=torch.bool)
    q_levels = [torch.rand(1, 3, h, w, generator=g) for h, w in levels]
    for q, (h, w) in zip(q_levels, levels):                               # nothing outside the top-left quarter
        q[..., h // 2:, :] = 0
        q[..., :, w // 2:] = 0
    dx, dy = shift
    moved = [torch.roll(q, shifts=(dy // s, dx // s), dims=(2, 3)) for q, s in zip(q_levels, strides)]
    flat = lambda qs: torch.cat([q.flatten(2) for q in qs], -1)
    before = pgw_importance(flat(q_levels), points, boxes, valid, 9)
    after = pgw_importance(flat(moved), points, boxes + torch.tensor([dx, dy, dx, dy]), valid, 9)
    for b, a, s in zip(split_levels(before, levels), split_levels(after, levels), strides):
        assert torch.allclose(torch.roll(b, shifts=(dy // s, dx // s), dims=(1, 2)), a, atol=1e-6)


# ---------------------------------------------------------------------------------------------- official code
def official_pgw_per_image(cls_prob, pred_boxes, points, gt_boxes, gt_labels, k, xi, reg_var, swap=False):
    """docs/methods.md §1.3 for one image: quality without indicator over all predictions, topk over dim 0, MLE,
    weight at the K candidates, strict validity after (with the B3 transposition if swap), max over objects.
    The U(-0.05, 0.05) noise is replaced by its expected covariance, as in the project."""
    if gt_boxes.shape[0] == 0:
        return torch.zeros(points.shape[0])
    lt = torch.maximum(pred_boxes[:, None, :2], gt_boxes[None, :, :2])
    rb = torch.minimum(pred_boxes[:, None, 2:], gt_boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    ious = inter / (area(pred_boxes)[:, None] + area(gt_boxes)[None] - inter)             # (A, M)
    overlaps = cls_prob[:, gt_labels] ** (1 - xi) * ious ** xi                                # (A, M)
    _, topk = overlaps.topk(min(k, points.shape[0]), dim=0)                                  # (K, M)
    xy = points[topk].double()                                                               # (K, M, 2)
    mu = xy.mean(0)
    d = xy - mu
    cov = torch.einsum("kmi,kmj->mij", d, d) / xy.shape[0] + reg_var * torch.eye(2, dtype=torch.float64)
    a, b, c, e = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 0], cov[:, 1, 1]
    inv = torch.stack([torch.stack([e, -b], -1), torch.stack([-c, a], -1)], -2) / (a * e - b * c + 1e-10)[:, None, None]
    w = torch.exp(-0.5 * torch.einsum("kmi,mij,kmj->km", d, inv, d))                       # (K, M)
    cy, cx = (points[:, 0], points[:, 1]) if swap else (points[:, 1], points[:, 0])
    x1, y1, x2, y2 = gt_boxes.T
    valid = (cx[:, None] > x1) & (cx[:, None] < x2) & (cy[:, None] > y1) & (cy[:, None] < y2)   # (A, M)
    dense = torch.zeros(points.shape[0], gt_boxes.shape[0], dtype=torch.float64)
    dense.scatter_(0, topk, w)
    return (dense * valid).max(dim=1).values.float()


@pytest.mark.parametrize("detector", ["atss", "fcos"])
def test_official_code_setting_matches_official_algorithm(detector):
    from pgd.core import quality_score

    g = torch.Generator().manual_seed(7)
    n, m, c = 3, 5, 4
    quality_inputs = []
    cls_prob = torch.rand(n, POINTS.shape[0], c, generator=g)
    centres = POINTS[None].expand(n, -1, -1) + torch.randn(n, POINTS.shape[0], 2, generator=g) * 4
    half = torch.rand(n, POINTS.shape[0], 2, generator=g) * 20 + 2
    pred_boxes = torch.cat([centres - half, centres + half], -1)
    xy1 = torch.rand(n, m, 2, generator=g) * 40
    gt_boxes = torch.cat([xy1, xy1 + torch.rand(n, m, 2, generator=g) * 24 + 4], -1)
    gt_labels = torch.randint(0, c, (n, m), generator=g)
    gt_valid = torch.ones(n, m, dtype=torch.bool)
    gt_valid[1, 3:] = False                      # padded objects
    gt_valid[2] = False                          # an image without objects
    s = PGDSettings.official_code(detector).replace(pgw_regulariser="deterministic")
    cfg = s.pgw_config()
    for xi in (s.xi_cls, s.xi_reg):
        q = quality_score(cls_prob, pred_boxes, POINTS, gt_boxes, gt_labels, gt_valid, xi, inside_indicator=False)
        got = pgw_importance(q, POINTS, gt_boxes, gt_valid, s.k, cfg)
        for i in range(n):
            keep = gt_valid[i]
            ref = official_pgw_per_image(cls_prob[i], pred_boxes[i], POINTS, gt_boxes[i][keep],
                                         gt_labels[i][keep], s.k, xi, EPS, swap=s.swap_xy_anchor_free)
            assert torch.allclose(got[i], ref, atol=1e-5), (detector, xi, i)
        quality_inputs.append(got)
    assert quality_inputs[0].abs().sum() > 0 and quality_inputs[1].abs().sum() > 0
