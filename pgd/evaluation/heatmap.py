"""`pgd heatmap` (the data of paper Fig. 2): per image, the teacher's quality score (Eq. 1, xi = 0.8) on the image
grid, max over the GT objects and over the FPN levels.

Each level's map (H_l, W_l) is painted onto the input image by giving every pixel the value of its nearest location
on that level, using the detector's own location convention (anchor centres j*s or points (j + 0.5)*s), i.e. each
location owns the s x s cell around it; the maximum over levels is taken per pixel. Locations that are not valid
(anchor-based batch padding) count as 0.

Output .npz (read by the Fig. 2 figure), for i = 0 .. num_images - 1:
  image_{i}     (H, W, 3) uint8 RGB: the network input before normalisation, cropped to the image (no padding)
  heatmap_{i}   (H, W) float32 in [0, 1]
  gt_boxes_{i}  (M, 4) float32 x1y1x2y2 in the same pixel frame; gt_labels_{i} (M,) int64
plus img_ids (num_images,), img_paths, detector (str), xi (float), num_images (int).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from pgd.core import quality_score, split_levels

XI = 0.8


def level_paintings(values: Tensor, points: Tensor, level_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                    out_hw: tuple[int, int]) -> list[Tensor]:
    """(N, A) per-location values -> one (N, H, W) painting per level, finest first: every pixel takes the value of
    its nearest location on that level (each location owns the s x s cell around it)."""
    h, w = out_hw
    ys = torch.arange(h, dtype=torch.float32, device=values.device) + 0.5    # pixel centres
    xs = torch.arange(w, dtype=torch.float32, device=values.device) + 0.5
    out, start = [], 0
    for lvl_map, (hl, wl), s in zip(split_levels(values, level_sizes), level_sizes, strides):
        x0, y0 = points[start, 0].item(), points[start, 1].item()     # the level's first location (row-major)
        start += hl * wl
        col = torch.floor((xs - x0) / s + 0.5).long().clamp(0, wl - 1)
        row = torch.floor((ys - y0) / s + 0.5).long().clamp(0, hl - 1)
        out.append(lvl_map[:, row][:, :, col])
    return out


def paint_levels(values: Tensor, points: Tensor, level_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                 out_hw: tuple[int, int]) -> Tensor:
    """(N, A) per-location values -> (N, H, W): max over levels of each level's nearest-location painting."""
    return torch.stack(level_paintings(values, points, level_sizes, strides, out_hw)).amax(0)


def paint_finest(values: Tensor, points: Tensor, level_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                 out_hw: tuple[int, int]) -> Tensor:
    """(N, A) -> (N, H, W): each pixel takes the value of the finest level whose cell there is non-zero, so a
    weighting is drawn at the resolution of the level that carries it (a coarse level shows only where no finer
    one weights anything)."""
    out = None
    for layer in level_paintings(values, points, level_sizes, strides, out_hw):
        out = layer if out is None else torch.where(out != 0, out, layer)
    return out


def quality_heatmaps(dense, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor, out_hw: tuple[int, int],
                     xi: float = XI) -> Tensor:
    """(N, H, W) quality heatmaps from DensePredictions and padded GT."""
    q = quality_score(dense.cls_prob, dense.boxes, dense.points, gt_boxes, gt_labels, gt_valid, xi)
    per_location = q.amax(dim=1) * dense.valid.to(q.dtype)
    return paint_levels(per_location, dense.points, dense.level_sizes, dense.strides, out_hw)


@torch.no_grad()
def collect(model, dataloader, num_images: int, xi: float = XI) -> dict[str, np.ndarray]:
    from pgd.evaluation.pilot import batch_gt
    from pgd.models.adapters import build_adapter, detector_name

    adapter = build_adapter(model)
    arrays: dict[str, np.ndarray] = {}
    ids, paths = [], []
    for data_batch in dataloader:
        if len(ids) >= num_images:
            break
        data = model.data_preprocessor(data_batch, False)
        inputs, samples = data["inputs"], data["data_samples"]
        metas = [ds.metainfo for ds in samples]
        dense = adapter.dense_predictions(model.bbox_head(model.extract_feat(inputs)), metas)
        gt_boxes, gt_labels, gt_valid = batch_gt(samples, inputs.device)
        maps = quality_heatmaps(dense, gt_boxes, gt_labels, gt_valid, tuple(inputs.shape[-2:]), xi)
        for i, ds in enumerate(samples):
            if len(ids) >= num_images:
                break
            h, w = ds.metainfo["img_shape"][:2]
            k = len(ids)
            raw = data_batch["inputs"][i]                                   # (3, h, w) uint8, BGR as loaded
            arrays[f"image_{k}"] = raw[[2, 1, 0], :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
            arrays[f"heatmap_{k}"] = maps[i, :h, :w].cpu().numpy().astype(np.float32)
            valid = gt_valid[i]
            arrays[f"gt_boxes_{k}"] = gt_boxes[i][valid].cpu().numpy().astype(np.float32)
            arrays[f"gt_labels_{k}"] = gt_labels[i][valid].cpu().numpy().astype(np.int64)
            ids.append(int(ds.metainfo.get("img_id", k)))
            paths.append(str(ds.metainfo.get("img_path", "")))
    arrays.update(img_ids=np.asarray(ids, dtype=np.int64), img_paths=np.asarray(paths),
                  detector=np.asarray(detector_name(model.bbox_head)), xi=np.asarray(xi),
                  num_images=np.asarray(len(ids)))
    return arrays


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgd heatmap", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="trained run directory (config.py + model.pth)")
    p.add_argument("--checkpoint", help="weights (default <run-dir>/model.pth)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--num-images", type=int, default=4, help="first N test images (default %(default)s)")
    p.add_argument("--xi", type=float, default=XI, help="Eq. 1 xi (default %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. test_dataloader.batch_size=1 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $PGD_THREADS)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pgd.evaluation.pilot import PilotError, load_detector
    from pgd.cli_common import parse_overrides, set_threads

    set_threads(args.threads)
    if args.num_images < 1:
        print(f"pgd heatmap: error: --num-images must be >= 1, got {args.num_images}", file=sys.stderr)
        return 2
    try:
        model, dataloader, _ = load_detector(Path(args.run_dir), Path(args.checkpoint) if args.checkpoint else None,
                                             parse_overrides(args.overrides))
    except PilotError as err:
        print(f"pgd heatmap: error: {err}", file=sys.stderr)
        return 2
    arrays = collect(model, dataloader, args.num_images, args.xi)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    print(f"pgd heatmap: wrote {out} ({int(arrays['num_images'])} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
