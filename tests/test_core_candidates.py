"""Sparse PGW candidates (pgd.core.candidates) against the dense path quality_score + topk_candidates/pgw_importance."""
import pytest
import torch

from pgd.core import (PGWConfig, foreground_importance, gaussian_importance, inside_boxes, pgw_importance,
                      prediction_candidates, quality_score, topk_candidates)
from pgd.core.candidates import inside_pairs, level_grid, overlap_pairs, pair_quality, top_k_pairs

torch.set_num_threads(1)
STRIDES = (8, 16, 32)
SIZES = [(8, 12), (4, 6), (2, 3)]           # a 64 x 96 input


def grid(offset: float):
    pts = []
    for (h, w), s in zip(SIZES, STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        pts.append(torch.stack([(xs.flatten() + offset) * s, (ys.flatten() + offset) * s], -1))
    return torch.cat(pts)


POINTS = grid(0.0)                           # anchor centres j s (ATSS, GFL, DDOD, AutoAssign)
A = POINTS.shape[0]


def case(seed: int, n: int = 3, m: int = 7, c: int = 5, j: int = 1, dtype=torch.float32, reach: float = 20):
    """Random predictions and GT with every edge case: padded objects, an image without objects, boxes smaller
    than a stride, boxes on grid lines, boxes partly / fully outside the image, a degenerate box. Predicted boxes
    reach 1 + U(0, reach) px from their centre: at reach 200 every one overlaps every GT box (no zero quality)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, A, j) if j > 1 else (n, A)
    cls_prob = torch.rand(*shape, c, generator=g, dtype=dtype)
    centre = POINTS.to(dtype).reshape(1, A, *(1,) * (j > 1), 2) + torch.randn(*shape, 2, generator=g, dtype=dtype) * 6
    half = torch.rand(*shape, 2, generator=g, dtype=dtype) * reach + 1
    boxes = torch.cat([centre - half, centre + half], -1)
    xy1 = torch.rand(n, m, 2, generator=g, dtype=dtype) * torch.tensor([90.0, 60.0], dtype=dtype) - 8
    wh = torch.rand(n, m, 2, generator=g, dtype=dtype) * 50 + 2
    gt_boxes = torch.cat([xy1, xy1 + wh], -1)
    gt_boxes[0, 0] = torch.tensor([17.0, 9.0, 22.0, 14.0])       # smaller than a stride, no location inside
    gt_boxes[0, 1] = torch.tensor([16.0, 8.0, 40.0, 32.0])       # edges on grid lines (strict inside test)
    gt_boxes[0, 2] = torch.tensor([100.0, 70.0, 140.0, 90.0])    # outside the image
    gt_boxes[0, 3] = torch.tensor([-30.0, -20.0, 20.0, 20.0])    # partly outside
    gt_boxes[1, 0] = torch.tensor([40.0, 30.0, 30.0, 50.0])      # degenerate (x2 < x1)
    gt_labels = torch.randint(0, c, (n, m), generator=g)
    gt_valid = torch.ones(n, m, dtype=torch.bool)
    gt_valid[1, 4:] = False                                       # padded objects
    gt_labels[1, 5] = -1                                          # padding may carry any label
    gt_valid[2] = False                                           # an image without objects
    return cls_prob, boxes, gt_boxes, gt_labels, gt_valid


def dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, xi, k, cfg, valid=None, generator=None):
    q = quality_score(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, xi,
                      inside_indicator=cfg.topk_inside_box, swap_xy=cfg.swap_xy)
    return q, pgw_importance(q, POINTS, gt_boxes, gt_valid, k, cfg, valid, generator)


def sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, xi, k, cfg, valid=None, generator=None, sizes=SIZES):
    cand = prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, xi, k, cfg, valid, sizes)
    return cand, gaussian_importance(cand.idx, cand.fitted, cand.kept, POINTS, cfg, cand.dtype, generator)


def candidate_sets(idx, fitted, kept):
    """Per object: the set of fitted and of kept locations (the order among the K does not matter)."""
    return [(set(i[f].tolist()), set(i[kp].tolist())) for i, f, kp in
            zip(idx.reshape(-1, idx.shape[-1]), fitted.reshape(-1, idx.shape[-1]), kept.reshape(-1, idx.shape[-1]))]


def tied_at_k(q, gt_boxes, gt_valid, k, cfg):
    """(N, M): objects whose K-th best candidate quality is shared by more locations than fit in the top-K (then
    which of them are taken is the ranking's choice: unspecified for the dense topk)."""
    score = q
    if cfg.topk_inside_box:
        score = q.masked_fill(~inside_boxes(POINTS, gt_boxes, gt_valid, swap_xy=cfg.swap_xy), float("-inf"))
    kth = score.topk(min(k, A), dim=-1).values[..., -1:]
    # within 1 ulp: float32 pow rounds an element by its position in the tensor (SIMD body vs tail)
    near = score >= kth * (1 - 2.4e-7)
    return (near.sum(-1) > min(k, A)) & (kth[..., 0] > float("-inf")) & gt_valid


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 4, 30, 1000])
@pytest.mark.parametrize("inside_box", [True, False])
@pytest.mark.parametrize("swap_xy", [False, True])
@pytest.mark.parametrize("reach", [20, 200])
def test_sparse_candidates_equal_dense(seed, k, inside_box, swap_xy, reach):
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(seed, reach=reach)
    cfg = PGWConfig(topk_inside_box=inside_box, swap_xy=swap_xy)
    for xi in (0.8, 0.6):
        q, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, xi, k, cfg)
        cand, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, xi, k, cfg)
        assert cand.idx.shape == (3, 7, min(k, A)) and cand.dtype == q.dtype
        tied = tied_at_k(q, gt_boxes, gt_valid, k, cfg)
        tied_elsewhere = tied.clone()
        tied_elsewhere[1, 0] = False                  # the degenerate box: IoU 0 everywhere
        assert reach == 20 or not tied_elsewhere.any()    # every other quality positive at reach 200
        old = topk_candidates(q, POINTS, gt_boxes, gt_valid, k, cfg)
        for obj, (new_sets, old_sets) in enumerate(zip(candidate_sets(*cand[:3]), candidate_sets(*old))):
            n, m = divmod(obj, 7)
            if tied[n, m]:      # the same qualities, possibly other locations of the tied value
                assert sorted(q[n, m, list(new_sets[0])].tolist()) == pytest.approx(
                    sorted(q[n, m, list(old_sets[0])].tolist()), rel=1e-6)
            else:
                assert new_sets == old_sets
        if tied.any():      # the importance of the other objects
            _, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid & ~tied, xi, k, cfg)
            _, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid & ~tied, xi, k, cfg)
        assert (got - ref).abs().max().item() <= 1e-5
        # (bug B3 in the code setting can reject every top-1 candidate: its transposed box is elsewhere)
        assert got[2].abs().sum() == 0 and (ref.abs().sum() > 0 or (swap_xy and not inside_box))


@pytest.mark.parametrize("inside_box", [True, False])
def test_invalid_locations_several_predictions_and_float64(inside_box):
    cfg = PGWConfig(topk_inside_box=inside_box)
    valid = torch.rand(3, A, generator=torch.Generator().manual_seed(5)) > 0.3
    for j, dtype in ((1, torch.float64), (2, torch.float32)):
        cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(3, j=j, dtype=dtype)
        _, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, 9, cfg, valid)
        cand, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, 9, cfg, valid)
        assert got.dtype == ref.dtype == dtype
        assert bool(valid.gather(1, cand.idx.reshape(3, -1))[cand.fitted.reshape(3, -1)].all())
        assert (got - ref).abs().max().item() <= 1e-5


def test_points_that_are_no_grid_take_the_dense_test():
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(4)
    assert level_grid(POINTS, SIZES) is not None
    assert level_grid(POINTS.flip(0), SIZES) is None and level_grid(POINTS, [(8, 12)]) is None
    cfg = PGWConfig()
    _, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, 30, cfg)
    for sizes in (None, [(A, 1)], [(1, A)]):      # no level sizes; one level of a non-grid layout
        _, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, 30, cfg, sizes=sizes)
        assert (got - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("swap_xy", [False, True])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_inside_pairs_are_the_inside_test(swap_xy, offset):
    points = grid(offset)
    _, _, gt_boxes, _, gt_valid = case(6, m=9)
    gt_boxes[0, 5] = torch.tensor([4.0, 4.0, 28.0, 20.0])         # edges on the offset-0.5 grid
    gt_boxes[0, 6] = torch.tensor([-1e4, -1e4, 1e4, 1e4])         # covers every location
    expected = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy).reshape(27, -1).nonzero()
    for sizes in (SIZES, None):
        pairs = inside_pairs(points, gt_boxes, gt_valid, swap_xy, sizes)
        assert torch.equal(torch.stack([pairs.obj, pairs.loc], 1), expected)
    assert int((pairs.obj == 6).sum()) == A


def test_overlap_pairs_cover_every_positive_iou():
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(7)
    q = quality_score(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, 0.8, inside_indicator=False)
    pairs = overlap_pairs(boxes, gt_boxes, gt_valid)
    covered = torch.zeros(3 * 7, A, dtype=torch.bool)
    covered[pairs.obj, pairs.loc] = True
    assert bool((q.reshape(21, A) > 0).le(covered).all())
    # float32 pow may round an element differently by its position in the tensor (SIMD body vs tail): 1 ulp
    assert torch.allclose(pair_quality(cls_prob, boxes, gt_boxes, gt_labels, pairs, 0.8), q.reshape(21, A)[covered],
                          rtol=2e-7, atol=0)


def test_code_setting_with_few_overlaps_ranks_every_location():
    # predicted boxes far from the one object: no positive quality anywhere, the K candidates are zeros of the
    # dense ranking (the official code fits the Gaussian to them and zeroes those outside the box)
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = (t[:1] for t in case(8))
    gt_boxes, gt_labels, gt_valid = gt_boxes[:, :1].clone(), gt_labels[:, :1], gt_valid[:, :1]
    gt_boxes[0, 0] = torch.tensor([10.0, 10.0, 30.0, 30.0])
    boxes[0, :, :2] = boxes[0, :, :2].clamp(min=200.0)
    boxes[0, :, 2:] = boxes[0, :, :2] + 5
    boxes[0, 40] = torch.tensor([12.0, 12.0, 20.0, 20.0])         # a single overlapping prediction
    cfg = PGWConfig(topk_inside_box=False)
    q, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, 1, cfg)
    cand, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, 1, cfg)
    assert cand.idx[0, 0].tolist() == [40] and torch.equal(got, ref)
    q, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, A, cfg)   # every location
    cand, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.8, A, cfg)
    assert bool(cand.fitted.all()) and (got - ref).abs().max().item() <= 1e-5


def test_xi_zero_code_setting_and_no_objects():
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(9)
    cfg = PGWConfig(topk_inside_box=False)
    _, ref = dense(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.0, 5, cfg)
    _, got = sparse(cls_prob, boxes, gt_boxes, gt_labels, gt_valid, 0.0, 5, cfg)
    assert (got - ref).abs().max().item() <= 1e-5
    for inside_box in (True, False):
        cand, got = sparse(cls_prob, boxes, gt_boxes[:, :0], gt_labels[:, :0], gt_valid[:, :0], 0.8, 5,
                           PGWConfig(topk_inside_box=inside_box))
        assert cand.idx.shape == (3, 0, 5) and torch.equal(got, torch.zeros(3, A))


def test_ties_take_the_lower_location_index():
    # xi = 0: quality = p exactly, equal everywhere; the paper setting's candidates are the first K inside
    cand = prediction_candidates(torch.full((1, A, 2), 0.5), POINTS.repeat(1, 2)[None], POINTS,
                                 torch.tensor([[[-1.0, -1.0, 1e3, 1e3]]]), torch.zeros(1, 1, dtype=torch.long),
                                 torch.ones(1, 1, dtype=torch.bool), 0.0, 4, level_sizes=SIZES)
    assert cand.idx[0, 0].tolist() == [0, 1, 2, 3]


def test_top_k_pairs_orders_by_value_then_position():
    from pgd.core.candidates import Pairs

    pairs = Pairs(torch.tensor([0, 0, 0, 0, 2, 2]), torch.tensor([5, 6, 7, 8, 1, 3]))
    values = torch.tensor([0.1, 0.7, float("-inf"), 0.7, -0.0, 0.0])
    idx, top = top_k_pairs(pairs, values, 3, 3)
    assert idx.tolist() == [[6, 8, 5], [0, 0, 0], [1, 3, 0]]
    assert top[0].tolist() == pytest.approx([0.7, 0.7, 0.1]) and top[1].tolist() == [float("-inf")] * 3
    assert top[2, 2].item() == float("-inf")
    idx64, _ = top_k_pairs(pairs, values.double(), 3, 3)
    assert torch.equal(idx64, idx)


@pytest.mark.parametrize("strategy", ["topkeq", "kde", "pgw"])
@pytest.mark.parametrize("inside_box", [True, False])
def test_strategies_from_candidates_equal_quality_path(strategy, inside_box):
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(10)
    cfg = PGWConfig(topk_inside_box=inside_box, regulariser="noise")
    valid = torch.ones(3, A, dtype=torch.bool)
    valid[:, -5:] = False
    q = quality_score(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, 0.6, inside_indicator=inside_box)
    cand = prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, 0.6, 30, cfg, valid, SIZES)
    ref = foreground_importance(strategy, POINTS, gt_boxes, gt_valid, quality=q, k=30, cfg=cfg, valid=valid,
                                generator=torch.Generator().manual_seed(3))
    got = foreground_importance(strategy, POINTS, gt_boxes, gt_valid, candidates=cand, cfg=cfg, valid=valid,
                                generator=torch.Generator().manual_seed(3))
    assert ref.abs().sum() > 0 and (got - ref).abs().max().item() <= 1e-5


def test_bad_inputs_raise():
    cls_prob, boxes, gt_boxes, gt_labels, gt_valid = case(0)
    with pytest.raises(ValueError, match="xi must lie in"):
        prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, 1.5, 5)
    with pytest.raises(ValueError, match="k must be a positive int"):
        prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, 0.8, 0)
    with pytest.raises(ValueError, match="must be \\(N, A, \\[J,\\] C\\)"):
        prediction_candidates(cls_prob[:, :-1], boxes, POINTS, gt_boxes, gt_labels, gt_valid, 0.8, 5)
    with pytest.raises(ValueError, match="valid must be"):
        prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, gt_labels, gt_valid, 0.8, 5, valid=gt_valid)
    bad = gt_labels.clone()
    bad[0, 0] = 5
    with pytest.raises(ValueError, match="valid GT label lies outside"):
        prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, bad, gt_valid, 0.8, 5)
    with pytest.raises(ValueError, match="needs the quality scores"):
        foreground_importance("quality", POINTS, gt_boxes, gt_valid,
                              candidates=prediction_candidates(cls_prob, boxes, POINTS, gt_boxes, gt_labels,
                                                               gt_valid, 0.8, 5))


def test_speed_benchmark_baselines_agree_with_the_project(capsys):
    # benchmarks/pgw_speed.py exits 1 when a baseline and the project's PGW differ by more than 1e-5
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pgw_speed.py"
    spec = importlib.util.spec_from_file_location("pgw_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--repeats", "1", "--objects", "0", "3"]) == 0
    out = capsys.readouterr().out
    assert "A = 22300 locations" in out and "max |diff| 0.0e+00: OK" in out
