"""Distillation regions: the background mask and the Table 5 foreground strategies.

Every foreground strategy returns an importance I (N, A) in [0, 1] over all levels concatenated; like PGW it then
goes through `split_levels` + `normalise_by_count` (Eq. 4). Objects are combined with a max, as in PGW.
Definitions (docs/methods.md §2; the paper gives names only):
  box       1 inside any GT box.
  boxgauss  exp(-dx^2 / (2 sx^2) - dy^2 / (2 sy^2)) about the box centre with (sx, sy) = half the box size
            (DeFeat's Gaussian), inside the box only.
  centre    1 inside the central 0.2W x 0.2H sub-box (bounds inclusive). An object with no location there (small
            boxes on coarse grids) falls back to its single location nearest the box centre (over all levels,
            ties to the finer level), so that no object goes without distillation; that location may lie outside
            a box smaller than the finest stride.
  quality   the Eq. 1 quality itself, inside the box, no top-K.
  topkeq    weight 1 on the same top-K candidates PGW uses.
  kde       on the same top-K candidates, a Gaussian KDE of the candidates (Scott's rule: bandwidth matrix =
            unbiased sample covariance * K^(-1/3), as scipy.stats.gaussian_kde), rescaled so each object's max
            is 1; the PGW regulariser is added to the bandwidth so collinear candidates stay defined.
  pgw       Eqs. 2-3 (pgd.core.pgw).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .candidates import Candidates
from .geometry import check_gt, check_points, inside_boxes
from .pgw import gaussian_importance, inverse_2x2, scatter_max_objects, topk_candidates
from .settings import FG_STRATEGIES, PGWConfig

NEEDS_QUALITY = ("quality", "topkeq", "kde", "pgw")
# strategies that read the quality only through each object's top-K candidates (`Candidates` can replace it)
CANDIDATE_STRATEGIES = ("topkeq", "kde", "pgw")


def background_mask(points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, swap_xy: bool = False,
                    valid: Tensor | None = None) -> Tensor:
    """(N, A) {0, 1}: 1 where the location lies strictly inside no GT box (docs/methods.md §1.4).

    Locations inside a box that PGW does not select get neither weight. `valid` False (batch padding of
    anchor-based heads) is 0, as the official anchor-based code unmaps with fill 0.
    """
    inside_any = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy).any(dim=1)
    bg = (~inside_any).to(points.dtype if points.is_floating_point() else torch.float32)
    return bg if valid is None else bg * valid.to(bg.dtype)


def box_importance(points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, swap_xy: bool = False) -> Tensor:
    inside = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy)
    return inside.any(dim=1).to(gt_boxes.dtype)


def boxgauss_importance(points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, swap_xy: bool = False) -> Tensor:
    inside = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy)
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2                         # (N, M, 2)
    sigma = ((gt_boxes[..., 2:] - gt_boxes[..., :2]) / 2).clamp(min=1e-6)         # half the box size
    z = (points[None, None] - centre[:, :, None]) / sigma[:, :, None]            # (N, M, A, 2)
    g = torch.exp(-0.5 * (z * z).sum(-1)) * inside.to(z.dtype)
    return g.amax(dim=1) if g.shape[1] else g.new_zeros(g.shape[0], points.shape[0])


def centre_importance(points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, valid: Tensor | None = None,
                      ratio: float = 0.2) -> Tensor:
    n, m = gt_valid.shape
    a = points.shape[0]
    if m == 0:
        return gt_boxes.new_zeros(n, a)
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    half = (gt_boxes[..., 2:] - gt_boxes[..., :2]) * (ratio / 2)
    lo, hi = (centre - half)[:, :, None], (centre + half)[:, :, None]            # (N, M, 1, 2)
    p = points[None, None]
    usable = gt_valid.bool()[..., None].expand(n, m, a)
    if valid is not None:
        usable = usable & valid.bool()[:, None, :]
    central = ((p >= lo) & (p <= hi)).all(-1) & usable                           # (N, M, A)
    # fallback: the nearest usable location to the centre, for objects whose central region holds none
    dist = ((p - centre[:, :, None]) ** 2).sum(-1).masked_fill(~usable, float("inf"))
    nearest = dist.argmin(dim=-1, keepdim=True)                                  # (N, M, 1), ties -> first
    need = gt_valid.bool() & ~central.any(-1) & usable.any(-1)
    fallback = torch.zeros_like(central).scatter(-1, nearest, need[..., None])
    return (central | fallback).any(dim=1).to(gt_boxes.dtype)


def quality_importance(quality: Tensor, points: Tensor, gt_boxes: Tensor, gt_valid: Tensor,
                       swap_xy: bool = False) -> Tensor:
    inside = inside_boxes(points, gt_boxes, gt_valid, swap_xy=swap_xy)
    q = quality.detach().clamp(0.0, 1.0) * inside.to(quality.dtype)
    return q.amax(dim=1) if q.shape[1] else q.new_zeros(q.shape[0], q.shape[2])


def _candidates(quality: Tensor, points: Tensor, gt_boxes: Tensor, gt_valid: Tensor, k: int, cfg: PGWConfig,
                valid: Tensor | None) -> Candidates:
    return Candidates(*topk_candidates(quality, points, gt_boxes, gt_valid, k, cfg, valid), quality.dtype)


def topkeq_importance(cand: Candidates, num_locations: int) -> Tensor:
    return scatter_max_objects(cand.kept.to(cand.dtype), cand.idx, num_locations)


def kde_importance(cand: Candidates, points: Tensor, cfg: PGWConfig) -> Tensor:
    idx, fitted, kept = cand.idx, cand.fitted, cand.kept
    n, m, kk = idx.shape
    xy = points[idx.reshape(-1)].reshape(n, m, kk, 2).double()
    w = fitted.double()
    count = w.sum(-1)
    mu = (w[..., None] * xy).sum(-2) / count.clamp(min=1)[..., None]
    d = xy - mu[..., None, :]
    cov = torch.einsum("...k,...ki,...kj->...ij", w, d, d) / (count - 1).clamp(min=1)[..., None, None]
    bandwidth = cov * count.clamp(min=1).pow(-1.0 / 3.0)[..., None, None]
    if cfg.regulariser != "none":
        bandwidth = bandwidth + cfg.reg_variance * torch.eye(2, dtype=cov.dtype, device=cov.device)
    # kernel centred on candidate j evaluated at candidate i: (N, M, K_i, K_j)
    diff = xy[..., :, None, :] - xy[..., None, :, :]                             # x_i - x_j
    inv = inverse_2x2(bandwidth, cfg.det_eps)
    maha = torch.einsum("...ijp,...pq,...ijq->...ij", diff, inv, diff)
    density = (torch.exp(-0.5 * maha) * w[..., None, :]).sum(-1) * kept.double()  # (N, M, K)
    peak = density.amax(dim=-1, keepdim=True)
    weight = torch.where(peak > 0, density / peak.clamp(min=1e-300), torch.zeros_like(density))
    return scatter_max_objects(weight.to(cand.dtype), idx, points.shape[0])


def foreground_importance(strategy: str, points: Tensor, gt_boxes: Tensor, gt_valid: Tensor,
                          quality: Tensor | None = None, k: int = 30, cfg: PGWConfig | None = None,
                          valid: Tensor | None = None, generator: torch.Generator | None = None,
                          candidates: Candidates | None = None) -> Tensor:
    """Table 5 dispatcher: importance (N, A) in [0, 1] for `strategy` in FG_STRATEGIES.

    quality (N, M, A) is required by quality/topkeq/kde/pgw; topkeq/kde/pgw take `candidates` instead (from
    `prediction_candidates`, which skips the (N, M, A) quality). Locations with valid False get 0.
    """
    if strategy not in FG_STRATEGIES:
        raise ValueError(f"foreground_importance: unknown strategy {strategy!r}; expected one of {FG_STRATEGIES}")
    check_points(points)
    check_gt(gt_boxes, gt_valid)
    has_candidates = strategy in CANDIDATE_STRATEGIES and candidates is not None
    if strategy in NEEDS_QUALITY and quality is None and not has_candidates:
        raise ValueError(f"foreground_importance: strategy {strategy!r} needs the quality scores")
    cfg = cfg or PGWConfig()
    with torch.no_grad():
        if strategy == "box":
            out = box_importance(points, gt_boxes, gt_valid, cfg.swap_xy)
        elif strategy == "boxgauss":
            out = boxgauss_importance(points, gt_boxes, gt_valid, cfg.swap_xy)
        elif strategy == "centre":
            out = centre_importance(points, gt_boxes, gt_valid, valid)
        elif strategy == "quality":
            out = quality_importance(quality, points, gt_boxes, gt_valid, cfg.swap_xy)
        else:
            cand = candidates if candidates is not None else _candidates(quality, points, gt_boxes, gt_valid, k,
                                                                         cfg, valid)
            if strategy == "topkeq":
                out = topkeq_importance(cand, points.shape[0])
            elif strategy == "kde":
                out = kde_importance(cand, points, cfg)
            else:
                out = gaussian_importance(cand.idx, cand.fitted, cand.kept, points, cfg, cand.dtype, generator)
    return out if valid is None else out * valid.to(out.dtype)
