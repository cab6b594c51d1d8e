"""PGW speed at COCO scale: the project's prediction-guided weighting against the official algorithm, per image.

One 1333 x 800 image on the P3-P7 anchor grid (strides 8-128, 22,300 locations), 80 classes, K = 30,
10 / 50 / 100 GT objects, one torch thread. Each implementation goes from the teacher's predictions (class
probabilities (A, C), decoded boxes (A, 4)) and the GT to the per-location importance (A,): Eq. 1 quality + top-K +
Gaussian (Eqs. 2-3) + max over objects. Rows (docs/pgw-speed.md describes the two baselines):
  official algorithm      per image, dense (A, M) IoU / quality, top-K over all locations, Gaussian at the K
                          candidates, dense (A, M) inside-box validity, one loop over objects to scatter the
                          weights into an (A, M) map, max over objects (the official code's algorithm, written
                          fresh; the deterministic covariance regulariser replaces its noise so results compare).
  per-object loop         the paper setting one object at a time: quality of all locations, top-K among those
                          inside the box, Gaussian, scatter-max.
  project, code setting   pgd.core.prediction_candidates + gaussian_importance with topk_inside_box=False (the
                          official algorithm's maths); checked against the official algorithm.
  project, paper setting  the same with topk_inside_box=True (the project's default); checked against the
                          per-object loop.
  previous dense          quality_score (N, M, A) + pgw_importance, paper setting (the implementation before the
                          sparse candidates); checked against the per-object loop.
ms per image: median over interleaved repeats of the process CPU time (with one thread, the wall time of an idle
machine) and of the wall time; "x official" is the official algorithm's CPU time over the row's. Exit status 1 if any
max |diff| exceeds 1e-5.
Run: .venv/bin/python benchmarks/pgw_speed.py [--repeats 9] [--objects 10 50 100]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from pgd.core import PGWConfig, gaussian_importance, pgw_importance, prediction_candidates, quality_score
from pgd.core.pgw import gaussian_fit, gaussian_weight

STRIDES = (8, 16, 32, 64, 128)
TOLERANCE = 1e-5


def coco_grid(height: int = 800, width: int = 1333, strides=STRIDES) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Anchor centres (j s, i s) of every level, finest first, row-major; and the level sizes (H_l, W_l)."""
    pts, sizes = [], []
    for s in strides:
        h, w = math.ceil(height / s), math.ceil(width / s)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        pts.append(torch.stack([xs.flatten() * s, ys.flatten() * s], -1))
        sizes.append((h, w))
    return torch.cat(pts), sizes


def random_image(points: torch.Tensor, level_sizes, num_objects: int, num_classes: int = 80, seed: int = 0):
    """One image's teacher predictions and GT: boxes around their own location, 1-6 strides from it per side
    (an anchor of octave scale 8 spans 8 strides), GT boxes 16-316 px, probabilities sigmoid(N(-2, 1.5))."""
    g = torch.Generator().manual_seed(seed)
    stride = torch.cat([torch.full((h * w,), float(s)) for (h, w), s in zip(level_sizes, STRIDES)])
    extent = (torch.rand(points.shape[0], 4, generator=g) * 5 + 1) * stride[:, None]
    boxes = torch.cat([points - extent[:, :2], points + extent[:, 2:]], -1)
    cls_prob = torch.sigmoid(torch.randn(points.shape[0], num_classes, generator=g) * 1.5 - 2)
    wh = torch.rand(num_objects, 2, generator=g) * 300 + 16
    xy1 = torch.rand(num_objects, 2, generator=g) * (torch.tensor([1333.0, 800.0]) - wh)
    gt_boxes = torch.cat([xy1, xy1 + wh], -1)
    gt_labels = torch.randint(0, num_classes, (num_objects,), generator=g)
    return cls_prob, boxes, gt_boxes, gt_labels


def _bbox_overlaps(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """(A, M) IoU, the formula of the project's box_iou_aligned_grid (so that rankings agree bit for bit)."""
    lt = torch.maximum(boxes[:, None, :2], gt_boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], gt_boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_b = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    area_g = (gt_boxes[:, 2:] - gt_boxes[:, :2]).clamp(min=0).prod(-1)
    union = area_g[None, :] + area_b[:, None] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def _gaussian_at(xy: torch.Tensor, reg_var: float) -> torch.Tensor:
    """(M, K, 2) candidates -> (M, K) unnormalised Gaussian weights of their own MLE fit (float64)."""
    xy = xy.double()
    mu = xy.mean(1, keepdim=True)
    d = xy - mu
    cov = torch.einsum("mki,mkj->mij", d, d) / xy.shape[1] + reg_var * torch.eye(2, dtype=torch.float64)
    a, b, c, e = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 0], cov[:, 1, 1]
    inv = torch.stack([torch.stack([e, -b], -1), torch.stack([-c, a], -1)], -2) / (a * e - b * c + 1e-10)[:, None, None]
    return torch.exp(-0.5 * torch.einsum("mki,mij,mkj->mk", d, inv, d).clamp(min=0))


def official_algorithm(cls_prob, boxes, points, gt_boxes, gt_labels, xi, k, reg_var):
    """The official PGW algorithm for one image (code setting), written from its description."""
    a, m = points.shape[0], gt_boxes.shape[0]
    if m == 0:
        return torch.zeros(a)
    overlaps = cls_prob[:, gt_labels] ** (1 - xi) * _bbox_overlaps(boxes, gt_boxes) ** xi        # (A, M)
    _, topk = overlaps.topk(min(k, a), dim=0)                                                  # (K, M)
    cand_w = _gaussian_at(points[topk].transpose(0, 1), reg_var).float()                       # (M, K)
    cx, cy = points[:, 0][:, None], points[:, 1][:, None]
    valid = (cx > gt_boxes[:, 0]) & (cy > gt_boxes[:, 1]) & (cx < gt_boxes[:, 2]) & (cy < gt_boxes[:, 3])
    w = torch.zeros(a, m)
    for i in range(m):                                 # the official code scatters one object at a time
        w[topk[:, i], i] = cand_w[i]
    return (w * valid).max(dim=1).values


def per_object_loop(cls_prob, boxes, points, gt_boxes, gt_labels, xi, k, reg_var):
    """The paper setting one object at a time: top-K among the locations inside the box."""
    out = torch.zeros(points.shape[0])
    for box, label in zip(gt_boxes, gt_labels):
        q = cls_prob[:, label] ** (1 - xi) * _bbox_overlaps(boxes, box[None])[:, 0] ** xi
        inside = ((points[:, 0] > box[0]) & (points[:, 0] < box[2]) & (points[:, 1] > box[1])
                  & (points[:, 1] < box[3]))
        if not inside.any():
            continue
        vals, idx = q.masked_fill(~inside, float("-inf")).topk(min(k, int(inside.sum())))
        g = _gaussian_at(points[idx][None], reg_var)[0].float()
        out.scatter_reduce_(0, idx, g, reduce="amax")
    return out


def project_sparse(cls_prob, boxes, points, level_sizes, gt_boxes, gt_labels, xi, k, cfg):
    valid = torch.ones(1, gt_boxes.shape[0], dtype=torch.bool)
    cand = prediction_candidates(cls_prob[None], boxes[None], points, gt_boxes[None], gt_labels[None], valid, xi,
                                 k, cfg, level_sizes=level_sizes)
    return gaussian_importance(cand.idx, cand.fitted, cand.kept, points, cfg, cand.dtype)[0]


def previous_dense(cls_prob, boxes, points, gt_boxes, gt_labels, xi, k, cfg):
    valid = torch.ones(1, gt_boxes.shape[0], dtype=torch.bool)
    q = quality_score(cls_prob[None], boxes[None], points, gt_boxes[None], gt_labels[None], valid, xi,
                      inside_indicator=cfg.topk_inside_box, swap_xy=cfg.swap_xy)
    return pgw_importance(q, points, gt_boxes[None], valid, k, cfg)[0]


def interleaved_medians(fns, repeats: int) -> list[tuple[float, float]]:
    """(median CPU seconds, median wall seconds) of each function, measured in turn so that load from other
    processes hits all alike. With one thread the process CPU time approximates the wall time on an idle machine."""
    times = [([], []) for _ in fns]
    for _ in range(repeats):
        for (cpu, wall), fn in zip(times, fns):
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return [(statistics.median(cpu), statistics.median(wall)) for cpu, wall in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--objects", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--xi", type=float, default=0.8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    points, sizes = coco_grid()
    paper, code = PGWConfig(), PGWConfig(topk_inside_box=False)
    var = paper.reg_variance
    print(f"1333x800, strides {STRIDES}: A = {points.shape[0]} locations, 80 classes, K = {args.k}, xi = {args.xi}, "
          f"{args.threads} thread(s), ms per image = median of {args.repeats} interleaved repeats")
    print(f"{'objects':>7}  {'implementation':<24}{'CPU ms':>9}{'wall ms':>9}{'x official':>12}   max |diff| (vs)")
    worst = 0.0
    for m in args.objects:
        cls_prob, boxes, gt_boxes, gt_labels = random_image(points, sizes, m)
        inputs = (cls_prob, boxes, points)
        rows = [
            ("official algorithm", lambda: official_algorithm(*inputs, gt_boxes, gt_labels, args.xi, args.k, var)),
            ("per-object loop", lambda: per_object_loop(*inputs, gt_boxes, gt_labels, args.xi, args.k, var)),
            ("project, code setting", lambda: project_sparse(*inputs, sizes, gt_boxes, gt_labels, args.xi, args.k,
                                                             code)),
            ("project, paper setting", lambda: project_sparse(*inputs, sizes, gt_boxes, gt_labels, args.xi, args.k,
                                                              paper)),
            ("previous dense (paper)", lambda: previous_dense(*inputs, gt_boxes, gt_labels, args.xi, args.k, paper)),
        ]
        out = [fn() for _, fn in rows]
        reference = {0: None, 1: None, 2: 0, 3: 1, 4: 1}
        times = interleaved_medians([fn for _, fn in rows], args.repeats)
        for i, ((name, _), (t, wall)) in enumerate(zip(rows, times)):
            ref = reference[i]
            check = ""
            if ref is not None:
                diff = (out[i] - out[ref]).abs().max().item()
                worst = max(worst, diff)
                check = f"{diff:.1e} ({rows[ref][0]})"
            print(f"{m if i == 0 else '':>7}  {name:<24}{t * 1e3:>9.2f}{wall * 1e3:>9.2f}{times[0][0] / t:>11.2f}x   "
                  f"{check}")
    ok = worst <= TOLERANCE
    print(f"max |diff| {worst:.1e}: {'OK' if ok else 'ABOVE'} (tolerance {TOLERANCE:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
