"""Prediction-Guided Weighting (paper Sec. 3.2, Eqs. 2-4), batched over images, objects and all FPN levels.

Layout: A = all FPN levels concatenated, each level row-major (H_l, W_l), finest level first, matching
`DensePredictions`. Objects are padded to M per image with a validity mask.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .geometry import check_gt, check_points, inside_boxes
from .settings import PGWConfig


def topk_candidates(quality: Tensor, points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, k: int,
                    cfg: PGWConfig, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The top-K locations of every object by quality.

    Returns idx (N, M, K') location indices with K' = min(k, A); `fitted` (N, M, K') the candidates the Gaussian
    is fit to; `kept` (N, M, K') the candidates that may receive a weight. Paper setting (topk_inside_box): only
    locations strictly inside the box compete, so an object with fewer than K inside has fewer candidates and
    fitted == kept. Code setting: every location competes, all K are fitted and those outside the box are dropped
    afterwards (docs/methods.md §1.3 steps 2 and 6). Locations with valid False (batch padding of anchor-based heads)
    never compete. Padded objects have no candidates.
    """
    if quality.dim() != 3:
        raise ValueError(f"quality must be (N, M, A), got shape {tuple(quality.shape)}")
    check_points(points)
    check_gt(gt_boxes, gt_valid)
    n, m, a = quality.shape
    if gt_boxes.shape[:2] != (n, m) or points.shape[0] != a:
        raise ValueError(f"quality {tuple(quality.shape)} does not match gt_boxes {tuple(gt_boxes.shape)} and "
                         f"points {tuple(points.shape)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if valid is not None and valid.shape != (n, a):
        raise ValueError(f"valid must be (N, A) = {(n, a)}, got {tuple(valid.shape)}")
    kk = min(k, a)
    neg_inf = quality.new_tensor(float("-inf"))
    score = quality.detach()
    if valid is not None:
        score = torch.where(valid.bool()[:, None, :], score, neg_inf)
    # Unrestricted top-K first: the code setting needs nothing else, and in the paper setting, when all K lie
    # inside the box they are also the top-K among the inside locations (every inside location left out scores no
    # higher). Only the other objects (fewer than K inside locations, or quality not zeroed outside the box) pay
    # for the full (A,) in-box masking. This avoids most (N, M, A) passes with the Eq. 1 indicator quality.
    values, idx = score.topk(kk, dim=-1)
    obj_valid = gt_valid.bool()
    inside_k = _inside_at(points[idx.reshape(-1)].reshape(n, m, kk, 2), gt_boxes, cfg.swap_xy)
    if cfg.topk_inside_box:
        redo = obj_valid & ~(inside_k & (values > float("-inf"))).all(-1)
        if redo.any():
            rows = redo.nonzero(as_tuple=True)
            boxes = gt_boxes[rows]                                                   # (R, 4)
            inside = inside_boxes(points, boxes[None], torch.ones_like(boxes[None, :, 0], dtype=torch.bool),
                                  swap_xy=cfg.swap_xy)[0]                             # (R, A)
            v2, i2 = torch.where(inside, score[rows], neg_inf).topk(kk, dim=-1)
            values, idx = values.index_put(rows, v2), idx.index_put(rows, i2)
            inside_k = inside_k.index_put(rows, v2 > float("-inf"))
    fitted = (values > float("-inf")) & obj_valid[..., None]
    kept = fitted & inside_k
    return idx, fitted, kept


def _inside_at(xy: Tensor, gt_boxes: Tensor, swap_xy: bool) -> Tensor:
    """Strict inside test of candidate positions xy (N, M, K, 2) against their own object's box (N, M, 4)."""
    xs, ys = (xy[..., 1], xy[..., 0]) if swap_xy else (xy[..., 0], xy[..., 1])
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))
    return (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)


def gaussian_fit(xy: Tensor, fitted: Tensor, cfg: PGWConfig,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Eq. 2: MLE (biased) mean and covariance of the fitted candidates; xy (..., K, 2) -> (..., 2), (..., 2, 2).

    Runs in float64: image coordinates reach ~1e3 px while the regulariser is ~1e-3 px^2.
    """
    xy = xy.double()
    if cfg.regulariser == "noise":
        h = cfg.noise_half_width
        xy = xy + (torch.rand(xy.shape, generator=generator, dtype=xy.dtype, device=xy.device) * 2 - 1) * h
    w = fitted.double()
    count = w.sum(-1).clamp(min=1.0)
    mu = (w[..., None] * xy).sum(-2) / count[..., None]
    d = xy - mu[..., None, :]
    cov = torch.einsum("...k,...ki,...kj->...ij", w, d, d) / count[..., None, None]
    if cfg.regulariser == "deterministic":
        cov = cov + cfg.reg_variance * torch.eye(2, dtype=cov.dtype, device=cov.device)
    return mu, cov


def inverse_2x2(cov: Tensor, det_eps: float) -> Tensor:
    """Adjugate / (det + eps) of (..., 2, 2) matrices: finite (if meaningless) for singular ones."""
    a, b, c, d = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 0], cov[..., 1, 1]
    det = a * d - b * c
    adj = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adj / (det + det_eps)[..., None, None]


def gaussian_weight(xy: Tensor, mu: Tensor, cov: Tensor, det_eps: float) -> Tensor:
    """Eq. 3 for the candidates: exp(-1/2 d^T Sigma^-1 d), with the inverse as adjugate / (det + eps) as in the
    official code so that a singular fit without regulariser stays finite. xy (..., K, 2) -> (..., K)."""
    inv = inverse_2x2(cov, det_eps)
    diff = xy.double() - mu[..., None, :]
    maha = torch.einsum("...ki,...ij,...kj->...k", diff, inv, diff).clamp(min=0.0)
    return torch.exp(-0.5 * maha)


def scatter_max_objects(weights: Tensor, idx: Tensor, num_locations: int) -> Tensor:
    """Max over objects: (N, M, K) weights at (N, M, K) location indices -> (N, A)."""
    n = weights.shape[0]
    out = weights.new_zeros(n, num_locations)
    return out.scatter_reduce(1, idx.reshape(n, -1), weights.reshape(n, -1), reduce="amax", include_self=True)


@torch.no_grad()
def pgw_importance(quality: Tensor, points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, k: int,
                   cfg: PGWConfig | None = None, valid: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """PGW importance I (Eq. 3 + max over objects), (N, A) in [0, 1]; no gradient.

    quality (N, M, A) from `quality_score` (with the inside indicator for the paper setting; the code setting
    ranks without it). Every non-zero weight sits on one of an object's top-K candidates; images without objects
    give all zeros. Normalise per level with `split_levels` + `normalise_by_count` (Eq. 4).
    `candidates.prediction_candidates` + `gaussian_importance` give the same from the predictions without the
    (N, M, A) quality.
    """
    cfg = cfg or PGWConfig()
    idx, fitted, kept = topk_candidates(quality, points, gt_boxes, gt_valid, k, cfg, valid)
    return gaussian_importance(idx, fitted, kept, points, cfg, quality.dtype, generator)


@torch.no_grad()
def gaussian_importance(idx: Tensor, fitted: Tensor, kept: Tensor, points: Tensor, cfg: PGWConfig,
                        dtype: torch.dtype = torch.float32,
                        generator: torch.Generator | None = None) -> Tensor:
    """Eqs. 2-3 on given top-K candidates (as `topk_candidates` returns them) + max over objects -> (N, A)."""
    n, m, kk = idx.shape
    xy = points[idx.reshape(-1)].reshape(n, m, kk, 2)
    mu, cov = gaussian_fit(xy, fitted, cfg, generator)
    g = gaussian_weight(xy, mu, cov, cfg.det_eps) * kept.double()
    return scatter_max_objects(g.to(dtype), idx, points.shape[0])


def split_levels(x: Tensor, level_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """(N, A) over all levels -> per level (N, H_l, W_l), row-major (the (N, C, H, W) feature layout)."""
    sizes = [int(h) * int(w) for h, w in level_sizes]
    if x.dim() != 2 or x.shape[1] != sum(sizes):
        raise ValueError(f"split_levels: expected (N, {sum(sizes)}) for level sizes {list(level_sizes)}, "
                         f"got {tuple(x.shape)}")
    return [part.reshape(x.shape[0], int(h), int(w))
            for part, (h, w) in zip(torch.split(x, sizes, dim=1), level_sizes)]


def normalise_by_count(mask: Tensor, eps: float = 1e-10) -> Tensor:
    """Eq. 4: divide each image's (H, W) map by its number of non-zero pixels (not by the sum of the weights).

    An all-zero map stays zero. mask (N, H, W) -> (N, H, W).
    """
    if mask.dim() != 3:
        raise ValueError(f"normalise_by_count: expected (N, H, W), got {tuple(mask.shape)}")
    count = (mask != 0).sum(dim=(1, 2), keepdim=True).to(mask.dtype)
    return mask / count.clamp(min=eps)
