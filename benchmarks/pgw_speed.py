"""PGW speed at COCO scale: the vectorised `pgw_importance` vs per-image, per-object loops.

P3-P7 grids of an 800 x 1333 input (~22k locations), batch 2, 10 / 50 / 100 objects per image, K = 30.
Two loop references, both exact (max |diff| is printed):
  torch loop   one object at a time, each step vectorised over the A locations (a careful port);
  plain loop   one object at a time, candidates ranked and weighted in Python (the reference of
               tests/test_core_pgw.py).
Quality is Eq. 1's (zero outside the object's box). The vectorised code takes one top-K over all objects and
locations and masks to the box only the objects whose unrestricted top-K leaves it; the loops mask every object.
Timings are best-of-R, measured in turn (load from other processes hits both alike).
Run: .venv/bin/python benchmarks/pgw_speed.py [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from pgd.core import PGWConfig, inside_boxes, pgw_importance
from pgd.core.pgw import gaussian_fit, gaussian_weight


def coco_points(height: int = 800, width: int = 1333, strides=(8, 16, 32, 64, 128)) -> torch.Tensor:
    pts = []
    for s in strides:
        h, w = math.ceil(height / s), math.ceil(width / s)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        pts.append(torch.stack([xs.flatten() * s, ys.flatten() * s], -1))
    return torch.cat(pts)


def loop_reference(quality, points, gt_boxes, gt_valid, k, cfg):
    """One object at a time (what a straightforward port of the official per-image code does)."""
    n_img, m_obj, a = quality.shape
    out = torch.zeros(n_img, a)
    for n in range(n_img):
        for m in range(m_obj):
            if not gt_valid[n, m]:
                continue
            x1, y1, x2, y2 = gt_boxes[n, m].tolist()
            inside = (points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2)
            score = quality[n, m].masked_fill(~inside, float("-inf"))
            vals, idx = score.topk(min(k, a))
            fitted = vals > float("-inf")
            xy = points[idx]
            mu, cov = gaussian_fit(xy, fitted, cfg)
            g = gaussian_weight(xy, mu, cov, cfg.det_eps).float() * fitted
            out[n].scatter_reduce_(0, idx, g, reduce="amax")
    return out


def plain_loop_reference(quality, points, gt_boxes, gt_valid, k, reg_var):
    n_img, m_obj, a = quality.shape
    out = torch.zeros(n_img, a)
    px, py = points[:, 0].tolist(), points[:, 1].tolist()
    for n in range(n_img):
        for m in range(m_obj):
            if not gt_valid[n, m]:
                continue
            x1, y1, x2, y2 = gt_boxes[n, m].tolist()
            q = quality[n, m].tolist()
            pool = [i for i in range(a) if x1 < px[i] < x2 and y1 < py[i] < y2]
            chosen = sorted(pool, key=lambda i: -q[i])[:k]
            if not chosen:
                continue
            mx = sum(px[i] for i in chosen) / len(chosen)
            my = sum(py[i] for i in chosen) / len(chosen)
            sxx = sum((px[i] - mx) ** 2 for i in chosen) / len(chosen) + reg_var
            syy = sum((py[i] - my) ** 2 for i in chosen) / len(chosen) + reg_var
            sxy = sum((px[i] - mx) * (py[i] - my) for i in chosen) / len(chosen)
            det = sxx * syy - sxy * sxy
            for i in chosen:
                dx, dy = px[i] - mx, py[i] - my
                maha = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det
                out[n, i] = max(out[n, i].item(), math.exp(-0.5 * maha))
    return out


def random_case(points, n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, m, 2, generator=g) * 300 + 16
    xy1 = torch.rand(n, m, 2, generator=g) * (torch.tensor([1333.0, 800.0]) - wh)
    boxes = torch.cat([xy1, xy1 + wh], -1)
    valid = torch.ones(n, m, dtype=torch.bool)
    # Eq. 1 quality as quality_score gives it: zero outside the object's box
    quality = torch.rand(n, m, points.shape[0], generator=g) * inside_boxes(points, boxes, valid)
    return quality, boxes, valid


def interleaved_best(fns, repeats):
    """Best-of times of several functions measured in turn, so that load from other processes hits all alike."""
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--objects", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--k", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    points = coco_points()
    cfg = PGWConfig()
    print(f"locations A = {points.shape[0]}, batch 2, K = {args.k}, threads {args.threads}, best of {args.repeats}")
    print(f"{'objects':>8} {'vectorised ms':>14} {'torch loop ms':>14} {'x':>6} {'plain loop ms':>14} {'x':>7}"
          f" {'max |diff|':>11}")
    for m in args.objects:
        quality, boxes, valid = random_case(points, 2, m)
        fast = pgw_importance(quality, points, boxes, valid, args.k, cfg)
        diff = max((fast - loop_reference(quality, points, boxes, valid, args.k, cfg)).abs().max().item(),
                   (fast - plain_loop_reference(quality, points, boxes, valid, args.k, cfg.reg_variance))
                   .abs().max().item())
        t_fast, t_loop = interleaved_best(
            [lambda: pgw_importance(quality, points, boxes, valid, args.k, cfg),
             lambda: loop_reference(quality, points, boxes, valid, args.k, cfg)], args.repeats)
        (t_plain,) = interleaved_best(
            [lambda: plain_loop_reference(quality, points, boxes, valid, args.k, cfg.reg_variance)], 1)
        print(f"{m:>8} {t_fast * 1e3:>14.2f} {t_loop * 1e3:>14.2f} {t_loop / t_fast:>5.1f}x "
              f"{t_plain * 1e3:>14.1f} {t_plain / t_fast:>6.0f}x {diff:>11.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
