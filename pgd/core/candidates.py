"""Sparse PGW candidates: the top-K locations of every object from (object, location) pairs, without (N, M, A) maps.

`prediction_candidates` returns what `topk_candidates(quality_score(...))` returns, but computes the Eq. 1 quality
only for the pairs that can be candidates:
  paper setting (top-K inside the box): the locations strictly inside the box. On an FPN grid these form one
      rectangle of rows x columns per level, found by binary search on the level's axes (index arithmetic only);
      for points that are not a grid, a dense inside test picks them.
  code setting (top-K over all locations): the locations whose predicted box overlaps the GT box (every other
      location has IoU 0, hence quality 0 for xi > 0). An object with fewer than K such pairs of positive quality
      ranks zeros against zeros; it is recomputed over all locations, exactly as the dense path does.
The top-K of each object is one sort of (object, quality) keys. Among locations of equal quality at the K-th place
the sparse path takes the lower location index; the dense `topk` leaves that order unspecified. (float32 `pow`
can round an element 1 ulp differently by its position in a tensor, so "equal" is within 1 ulp for both paths.)
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .geometry import box_iou_pairs, check_gt, check_points, inside_boxes
from .pgw import _inside_at, topk_candidates
from .quality import quality_score
from .settings import PGWConfig


class Candidates(NamedTuple):
    """Top-K candidates of every object, as `pgw.topk_candidates` returns them, plus the quality dtype."""

    idx: Tensor        # (N, M, K') location indices
    fitted: Tensor     # (N, M, K') bool: the Gaussian is fit to these
    kept: Tensor       # (N, M, K') bool: these may receive a weight
    dtype: torch.dtype  # dtype of the quality (and of the importance built from it)


class Pairs(NamedTuple):
    obj: Tensor   # (P,) flat object index n * M + m, non-decreasing
    loc: Tensor   # (P,) location index


class LevelGrid(NamedTuple):
    """Axes of a row-major grid of points per level, padded with +inf to the longest level."""

    xs: Tensor          # (L, max W_l) x of each column
    ys: Tensor          # (L, max H_l) y of each row
    start: Tensor       # (L,) index of the level's first location
    width: Tensor       # (L,) W_l


def level_grid(points: Tensor, level_sizes: Sequence[tuple[int, int]]) -> LevelGrid | None:
    """The per-level axes if `points` is a row-major grid per level with strictly increasing axes; None otherwise
    (then callers use a dense test)."""
    sizes = [(int(h), int(w)) for h, w in level_sizes]
    if not sizes or sum(h * w for h, w in sizes) != points.shape[0]:
        return None
    inf = float("inf")
    xs = points.new_full((len(sizes), max(w for _, w in sizes)), inf)
    ys = points.new_full((len(sizes), max(h for h, _ in sizes)), inf)
    start = 0
    for lvl, (h, w) in enumerate(sizes):
        grid = points[start:start + h * w].reshape(h, w, 2)
        start += h * w
        if h * w == 0:
            continue
        x, y = grid[0, :, 0], grid[:, 0, 1]
        if not (torch.equal(grid[..., 0], x.expand(h, w)) and torch.equal(grid[..., 1], y[:, None].expand(h, w))
                and bool((x[1:] > x[:-1]).all()) and bool((y[1:] > y[:-1]).all())):
            return None
        xs[lvl, :w], ys[lvl, :h] = x, y
    starts = [0]
    for h, w in sizes[:-1]:
        starts.append(starts[-1] + h * w)
    dev = points.device
    return LevelGrid(xs, ys, torch.tensor(starts, device=dev), torch.tensor([w for _, w in sizes], device=dev))


def _strict_range(axes: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Per level, [first, last) indices of the sorted (+inf padded) axis values v with lo < v < hi (the strict test
    of `inside_boxes`); axes (L, W), lo / hi (S,) -> (S, L) each."""
    dtype = torch.promote_types(axes.dtype, lo.dtype)
    axes = axes.to(dtype).contiguous()
    lo = lo.to(dtype)[None].expand(axes.shape[0], -1).contiguous()
    hi = hi.to(dtype)[None].expand(axes.shape[0], -1).contiguous()
    first = torch.searchsorted(axes, lo, right=True)
    last = torch.searchsorted(axes, hi, right=False)
    return first.T, torch.maximum(last, first).T


def inside_pairs(points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, swap_xy: bool = False,
                 level_sizes: Sequence[tuple[int, int]] | None = None) -> Pairs:
    """Every (valid object, location strictly inside its box) pair, ordered by object then location.

    The pair set is exactly `inside_boxes(...).nonzero()`; with `level_sizes` of a grid it is built from per-level
    rectangles in O(P) instead of an O(N M A) test.
    """
    check_points(points)
    check_gt(gt_boxes, gt_valid)
    n, m = gt_valid.shape
    grid = level_grid(points, level_sizes) if level_sizes is not None else None
    if grid is None:
        nz = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy).reshape(n * m, -1).nonzero()
        return Pairs(nz[:, 0], nz[:, 1])
    boxes = gt_boxes.reshape(n * m, 4)
    # swap_xy (bug B3) tests the points as (y, x): the same as testing the transposed box
    x1, y1, x2, y2 = (boxes[:, [1, 0, 3, 2]] if swap_xy else boxes).unbind(-1)
    col0, col1 = _strict_range(grid.xs, x1, x2)                                  # (S, L)
    row0, row1 = _strict_range(grid.ys, y1, y2)
    width = col1 - col0
    num_levels = grid.start.numel()
    counts = (width * (row1 - row0) * gt_valid.reshape(-1, 1)).reshape(-1)      # (S * L,) rectangles, object-major
    first = (grid.start + row0 * grid.width + col0).reshape(-1)                 # each rectangle's top-left location
    row_len = grid.width.expand_as(width).reshape(-1)
    total = int(counts.sum())
    dev = counts.device
    rect = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts, output_size=total)
    offset = torch.arange(total, device=dev) - (counts.cumsum(0) - counts)[rect]   # row-major inside the rectangle
    w_r = width.reshape(-1)[rect]
    dy = torch.div(offset, w_r, rounding_mode="floor")
    loc = first[rect] + dy * row_len[rect] + (offset - dy * w_r)
    return Pairs(torch.div(rect, num_levels, rounding_mode="floor"), loc)


def overlap_pairs(boxes: Tensor, gt_boxes: Tensor, gt_valid: Tensor) -> Pairs:
    """Every (valid object, location) pair where one of the location's predicted boxes overlaps the GT box with
    positive width and height (min(x2) > max(x1) and the same in y): exactly the pairs of positive intersection,
    a superset of those of positive IoU. Ordered by object then location."""
    if boxes.dim() == 3:
        boxes = boxes.unsqueeze(2)
    n, a, j, _ = boxes.shape
    m = gt_boxes.shape[1]
    dtype = torch.promote_types(boxes.dtype, gt_boxes.dtype)
    # min(gx2, bx2) > max(gx1, bx1)  <=>  bx1 < gx2, bx2 > gx1, and both boxes have positive width (same in y)
    b = boxes.to(dtype).permute(0, 3, 1, 2).reshape(n, 4, 1, a * j)               # coordinate-major (N, 4, 1, AJ)
    g = gt_boxes.to(dtype).permute(0, 2, 1)[..., None]                           # (N, 4, M, 1)
    b_ok = ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))                           # (N, 1, AJ)
    g_ok = ((g[:, 2] > g[:, 0]) & (g[:, 3] > g[:, 1])) & gt_valid.bool()[..., None]   # (N, M, 1)
    overlap = torch.lt(b[:, 0], g[:, 2])
    overlap &= torch.gt(b[:, 2], g[:, 0])
    overlap &= torch.lt(b[:, 1], g[:, 3])
    overlap &= torch.gt(b[:, 3], g[:, 1])
    overlap &= b_ok
    overlap &= g_ok                                                              # (N, M, AJ)
    if j > 1:
        overlap = overlap.reshape(n, m, a, j).any(-1)
    nz = overlap.reshape(n * m, a).nonzero()
    return Pairs(nz[:, 0], nz[:, 1])


def pair_quality(cls_prob: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, pairs: Pairs,
                 xi: float) -> Tensor:
    """Eq. 1 without the indicator at the given pairs, (P,): the values `quality_score` gives there (the float
    operations of `box_iou_pairs`, on coordinate-major gathers)."""
    if cls_prob.dim() == 3:
        cls_prob, boxes = cls_prob.unsqueeze(2), boxes.unsqueeze(2)
    n, a, j, c = cls_prob.shape
    m = gt_boxes.shape[1]
    image = torch.div(pairs.obj, m, rounding_mode="floor") if m else pairs.obj
    row = image * a + pairs.loc                                                  # (P,) into (N * A)
    labels = gt_labels.reshape(-1).long().clamp(min=0)[pairs.obj]
    rows = row * j + torch.arange(j, device=row.device)[:, None]                 # (J, P) into (N * A * J)
    prob = cls_prob.reshape(-1).take(rows * c + labels).clamp_(0.0, 1.0)
    # coordinate-major (4, J, P) and (4, 1, P): every op below runs on contiguous rows
    pred = boxes.reshape(-1, 4).T.contiguous().index_select(1, rows.reshape(-1)).reshape(4, j, -1)
    gt = gt_boxes.to(boxes.dtype).reshape(-1, 4).T.contiguous().index_select(1, pairs.obj)[:, None]
    inter = torch.minimum(gt[2], pred[2]).sub_(torch.maximum(gt[0], pred[0])).clamp_(min=0)
    inter.mul_(torch.minimum(gt[3], pred[3]).sub_(torch.maximum(gt[1], pred[1])).clamp_(min=0))
    area_g = (gt[2] - gt[0]).clamp_(min=0).mul_((gt[3] - gt[1]).clamp_(min=0))
    area_b = (pred[2] - pred[0]).clamp_(min=0).mul_((pred[3] - pred[1]).clamp_(min=0))
    union = (area_g + area_b).sub_(inter)
    iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))
    q = prob.pow_(1.0 - xi).mul_(iou.pow_(xi))
    return q[0] if j == 1 else q.amax(dim=0)


def _descending_order(obj: Tensor, values: Tensor) -> Tensor:
    """Permutation sorting pairs by object, then by value descending, ties by position (stable)."""
    if values.dtype == torch.float32:
        # one int64 sort: the object in the high 32 bits, an order-reversed image of the float bits in the low
        bits = (values + 0.0).view(torch.int32)                                  # + 0.0 turns -0.0 into 0.0
        key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()              # monotone in the float value
        return torch.sort((obj << 32) | (0x7FFFFFFF - key), stable=True).indices
    order = torch.sort(values, descending=True, stable=True).indices
    return order[torch.sort(obj[order], stable=True).indices]


def top_k_pairs(pairs: Pairs, values: Tensor, num_objects: int, k: int) -> tuple[Tensor, Tensor]:
    """Per object, the (up to) k pairs of largest value: idx (S, k) location indices (0 where unfilled) and
    value (S, k) (-inf where unfilled), in descending order."""
    idx = torch.zeros(num_objects, k, dtype=torch.long, device=values.device)
    top = values.new_full((num_objects, k), float("-inf"))
    if values.numel() == 0:
        return idx, top
    order = _descending_order(pairs.obj, values)
    obj = pairs.obj[order]
    counts = torch.bincount(pairs.obj, minlength=num_objects)
    rank = torch.arange(obj.numel(), device=obj.device) - (counts.cumsum(0) - counts)[obj]
    take = (rank < k).nonzero()[:, 0]
    obj, rank, chosen = obj[take], rank[take], order[take]
    idx[obj, rank] = pairs.loc[chosen]
    top[obj, rank] = values[chosen]
    return idx, top


def prediction_candidates(cls_prob: Tensor, boxes: Tensor, points: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                          gt_valid: Tensor, xi: float, k: int, cfg: PGWConfig | None = None,
                          valid: Tensor | None = None,
                          level_sizes: Sequence[tuple[int, int]] | None = None) -> Candidates:
    """`topk_candidates(quality_score(..., inside_indicator=cfg.topk_inside_box, swap_xy=cfg.swap_xy), ...)`
    from the sparse pairs (module docstring). `level_sizes` (H_l, W_l) lets the paper setting find the inside
    locations by grid arithmetic."""
    cfg = cfg or PGWConfig()
    check_points(points)
    check_gt(gt_boxes, gt_valid)
    if not 0.0 <= xi <= 1.0:
        raise ValueError(f"prediction_candidates: xi must lie in [0, 1], got {xi}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    n, m = gt_valid.shape
    a = points.shape[0]
    if cls_prob.shape[:2] != (n, a) or boxes.shape[:2] != (n, a) or boxes.shape[-1] != 4:
        raise ValueError(f"prediction_candidates: cls_prob {tuple(cls_prob.shape)} and boxes {tuple(boxes.shape)} "
                         f"must be (N, A, [J,] C) and (N, A, [J,] 4) for N = {n}, A = {a}")
    if valid is not None and valid.shape != (n, a):
        raise ValueError(f"valid must be (N, A) = {(n, a)}, got {tuple(valid.shape)}")
    valid_gt = gt_valid.bool()
    if valid_gt.any():
        lab = gt_labels.long()[valid_gt]
        if lab.min() < 0 or lab.max() >= cls_prob.shape[-1]:
            raise ValueError(f"prediction_candidates: a valid GT label lies outside [0, {cls_prob.shape[-1]})")
    dtype = torch.promote_types(cls_prob.dtype, boxes.dtype)
    if not cfg.topk_inside_box and xi == 0.0:
        # quality = p everywhere: nothing to prune
        q = quality_score(cls_prob, boxes, points, gt_boxes, gt_labels, gt_valid, xi, inside_indicator=False)
        return Candidates(*topk_candidates(q, points, gt_boxes, gt_valid, k, cfg, valid), q.dtype)
    kk = min(k, a)
    if cfg.topk_inside_box:
        pairs = inside_pairs(points, gt_boxes, gt_valid, cfg.swap_xy, level_sizes)
    else:
        pairs = overlap_pairs(boxes, gt_boxes, gt_valid)
    if valid is not None:
        usable = valid.bool().reshape(-1)[torch.div(pairs.obj, max(m, 1), rounding_mode="floor") * a + pairs.loc]
        pairs = Pairs(pairs.obj[usable], pairs.loc[usable])
    values = pair_quality(cls_prob, boxes, gt_boxes, gt_labels, pairs, xi).to(dtype)
    idx, top = top_k_pairs(pairs, values, n * m, kk)
    obj_valid = valid_gt.reshape(-1)
    if not cfg.topk_inside_box:
        # fewer than K pairs of positive quality: zeros tie with every other location; rank all of them
        redo = (obj_valid & ~(top[:, -1] > 0)).nonzero()[:, 0]
        if redo.numel():
            all_loc = torch.arange(a, device=redo.device).repeat(redo.numel())
            dense = Pairs(redo.repeat_interleave(a), all_loc)
            q = pair_quality(cls_prob, boxes, gt_boxes, gt_labels, dense, xi).to(dtype).reshape(-1, a)
            if valid is not None:
                q = torch.where(valid.bool()[torch.div(redo, max(m, 1), rounding_mode="floor")], q,
                                q.new_tensor(float("-inf")))
            v2, i2 = q.topk(kk, dim=-1)
            top[redo], idx[redo] = v2, i2
    fitted = (top > float("-inf")) & obj_valid[:, None]
    idx, fitted = idx.reshape(n, m, kk), fitted.reshape(n, m, kk)
    if cfg.topk_inside_box:
        kept = fitted
    else:
        kept = fitted & _inside_at(points[idx.reshape(-1)].reshape(n, m, kk, 2), gt_boxes, cfg.swap_xy)
    return Candidates(idx, fitted, kept, dtype)
