"""`pgd pilot` (paper Fig. 3): AP of a trained detector after dropping, before NMS, the top-X% of its predictions by
quality inside the GT boxes.

Protocol (docs/methods.md §3; the paper gives one sentence, so every choice is stated):
* Candidates of a GT box b: the predictions (one per location for all five detectors) whose location lies strictly
  inside b and that are valid (anchor-based heads: inside the image's pad shape). n_b = their number.
* Quality: Eq. 1 with xi = 0.8 (as Fig. 2), the GT class's probability only, IoU of the decoded box with b.
* Per GT box (not image-wide), the top ceil(X% * n_b) candidates by quality are dropped; ties are broken by the
  location index (stable sort). A location inside several boxes is dropped when any of its boxes ranks it in its
  top X%.
* Dropping = all class logits of that location set to the dtype's minimum (`adapter.mask_predictions`), i.e. the
  prediction disappears for every class, before the head's unchanged post-processing (score threshold, nms_pre,
  NMS, max_per_img) and mmdet's CocoMetric.
* X in {0, 0.5, 1, 2, 5, 10, 20, 50} by default; X = 0 is the unmodified detector (its AP equals `pgd eval`'s).
Output: `<run-dir>/pilot.csv` with columns X, AP, AP50, AP75, APs, APm, APl (percent), dropped_per_image.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from pgd.core import inside_boxes, quality_score
from pgd.errors import UserError

RATIOS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
XI = 0.8


class PilotError(UserError, RuntimeError):
    """A run directory or an option the pilot cannot work with."""


# ---------------------------------------------------------------------------------------------- masking logic
def rank_in_box(quality: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """Rank (0 = best) of every candidate within its GT box by quality, ties to the lower location index.

    quality (N, M, A), candidates (N, M, A) bool -> rank (N, M, A) long (meaningful where candidates), n_b (N, M).
    """
    if quality.shape != candidates.shape or quality.dim() != 3:
        raise ValueError(f"pilot: quality {tuple(quality.shape)} and candidates {tuple(candidates.shape)} must "
                         "both be (N, M, A)")
    n, m, a = quality.shape
    score = torch.where(candidates, quality.double(), torch.tensor(-math.inf, dtype=torch.float64,
                                                                   device=quality.device))
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(a, device=order.device).expand(n, m, a))
    return rank, candidates.sum(-1)


def drop_from_ranks(rank: Tensor, candidates: Tensor, n_b: Tensor, ratio_percent: float) -> Tensor:
    """(N, A) bool: drop the top ceil(ratio% * n_b) candidates of every box (a location: if any box drops it)."""
    if not 0.0 <= ratio_percent <= 100.0:
        raise ValueError(f"pilot: ratio must be a percentage in [0, 100], got {ratio_percent}")
    if ratio_percent == 0.0 or rank.shape[1] == 0:
        return torch.zeros(rank.shape[0], rank.shape[2], dtype=torch.bool, device=rank.device)
    # exact for the percentages used here; the epsilon keeps 0.5% of 200 at 1 despite float rounding
    n_drop = torch.ceil(n_b.double() * ratio_percent / 100.0 - 1e-9).long().clamp(min=0)
    return (candidates & (rank < n_drop[..., None])).any(dim=1)


def drop_top_quality(quality: Tensor, candidates: Tensor, ratio_percent: float) -> Tensor:
    """Which predictions to drop, (N, A) bool: per GT box the top ceil(ratio% * n_b) of its candidates (in-box,
    valid predictions) by quality."""
    if not 0.0 <= ratio_percent <= 100.0:
        raise ValueError(f"pilot: ratio must be a percentage in [0, 100], got {ratio_percent}")
    rank, n_b = rank_in_box(quality, candidates)
    return drop_from_ranks(rank, candidates, n_b, ratio_percent)


def box_candidates(dense, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor,
                   xi: float = XI) -> tuple[Tensor, Tensor]:
    """Eq. 1 quality (N, M, A) and candidates (N, M, A): valid predictions strictly inside each GT box."""
    candidates = inside_boxes(dense.points, gt_boxes, gt_valid) & dense.valid[:, None, :]
    quality = quality_score(dense.cls_prob, dense.boxes, dense.points, gt_boxes, gt_labels, gt_valid, xi)
    return quality, candidates


def pilot_keep_mask(dense, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor, ratio_percent: float,
                    xi: float = XI) -> Tensor:
    """(N, A) bool: the predictions of `dense` (DensePredictions) that survive dropping the top ratio%."""
    return ~drop_top_quality(*box_candidates(dense, gt_boxes, gt_labels, gt_valid, xi), ratio_percent)


# ---------------------------------------------------------------------------------------------- model loading
def load_detector(run_dir: Path, checkpoint: Path | None = None, overrides: dict[str, Any] | None = None):
    """The run's plain detector (eval mode, weights loaded through pgd.checkpoint), its test dataloader and config."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.utils import import_modules_from_strings

    from pgd.checkpoint import load_checkpoint
    from pgd.evaluation.run_eval import EvalError, build_test_config
    from pgd.run_layout import MODEL_FILE

    checkpoint = checkpoint or run_dir / MODEL_FILE
    try:
        cfg = build_test_config(run_dir, checkpoint, overrides)
    except EvalError as err:
        raise PilotError(str(err)) from err
    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    from mmdet.registry import MODELS

    model = MODELS.build(cfg.model)
    state = load_checkpoint(checkpoint)
    state = state.get("state_dict", state)
    if any(k.startswith("student.") for k in state):
        raise PilotError(f"{checkpoint} holds a distiller; give the run's model.pth (the plain detector)")
    model.load_state_dict(state, strict=True)
    model.eval()
    if not hasattr(model, "bbox_head"):
        raise PilotError(f"{type(model).__name__} has no bbox_head: the pilot needs a single-stage dense detector")
    dataloader = Runner.build_dataloader(cfg.test_dataloader)
    return model, dataloader, cfg


def batch_gt(data_samples: Sequence, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Padded GT (N, M, 4) / (N, M) / (N, M) in the network-input frame, where the predictions live.

    mmdet's test pipeline loads the annotations after Resize, so gt_instances hold original-image boxes:
    they are scaled by each image's scale_factor (w, h)."""
    from pgd.losses.base import pad_gt

    boxes, labels = [], []
    for ds in data_samples:
        b = ds.gt_instances.bboxes
        b = (b.tensor if hasattr(b, "tensor") else b).float()
        sx, sy = ds.metainfo.get("scale_factor", (1.0, 1.0))[:2]
        boxes.append(b * b.new_tensor([sx, sy, sx, sy]))
        labels.append(ds.gt_instances.labels)
    if device is None and boxes:
        device = boxes[0].device
    return pad_gt(boxes, labels, device=device)


@torch.no_grad()
def run_pilot(model, dataloader, evaluator_cfg, ratios: Sequence[float] = RATIOS, xi: float = XI,
              max_batches: int | None = None) -> list[dict[str, Any]]:
    """One forward per batch, every ratio's masked post-processing on it; one CocoMetric per ratio."""
    from mmengine.evaluator import Evaluator

    from pgd.evaluation.metrics import empty_coco_record, infer_dataset, to_metrics_json
    from pgd.models.adapters import build_adapter

    adapter = build_adapter(model)
    dataset = infer_dataset(evaluator_cfg)
    evaluators = {}
    for r in ratios:
        ev = Evaluator(evaluator_cfg)
        ev.dataset_meta = dataloader.dataset.metainfo
        evaluators[r] = ev
    dropped = {r: 0 for r in ratios}
    images = 0
    for i, data_batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        data = model.data_preprocessor(data_batch, False)
        inputs, data_samples = data["inputs"], data["data_samples"]
        metas = [ds.metainfo for ds in data_samples]
        head_outs = model.bbox_head(model.extract_feat(inputs))
        dense = adapter.dense_predictions(head_outs, metas)
        gt_boxes, gt_labels, gt_valid = batch_gt(data_samples, inputs.device)
        images += len(data_samples)
        quality, candidates = box_candidates(dense, gt_boxes, gt_labels, gt_valid, xi)
        rank, n_b = rank_in_box(quality, candidates)
        for r in ratios:
            keep = ~drop_from_ranks(rank, candidates, n_b, r)
            dropped[r] += int((~keep).sum())
            outs = adapter.mask_predictions(head_outs, keep) if not keep.all() else head_outs
            results = model.bbox_head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)
            for ds, res in zip(data_samples, results):
                ds.pred_instances = res
            evaluators[r].process(data_samples=data_samples, data_batch=data_batch)
    if images == 0:
        raise PilotError("the test dataloader yielded no images")
    rows = []
    for r in ratios:
        raw = evaluators[r].evaluate(images)
        # CocoMetric reports nothing when no image has a detection (e.g. everything dropped); pgd eval's rule
        if not raw and dataset == "coco":
            from pgd.evaluation.run_eval import coco_ann_file

            record = empty_coco_record(coco_ann_file(evaluator_cfg))
        else:
            record = to_metrics_json(raw, dataset)
        record.pop("dataset")
        rows.append({"X": r, **record, "dropped_per_image": dropped[r] / images})
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgd pilot", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, help="trained run directory (config.py + model.pth)")
    p.add_argument("--checkpoint", help="weights (default <run-dir>/model.pth)")
    p.add_argument("--out", help="CSV path (default <run-dir>/pilot.csv)")
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="X values in percent")
    p.add_argument("--xi", type=float, default=XI, help="Eq. 1 xi (default %(default)s)")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many test batches")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override for testing, e.g. test_dataloader.batch_size=1 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $PGD_THREADS)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pgd.cli_common import parse_overrides, set_threads

    set_threads(args.threads)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "pilot.csv"
    if any(not 0 <= r <= 100 for r in args.ratios):
        print(f"pgd pilot: error: --ratios must be percentages in [0, 100], got {args.ratios}", file=sys.stderr)
        return 2
    try:
        model, dataloader, cfg = load_detector(run_dir, Path(args.checkpoint) if args.checkpoint else None,
                                               parse_overrides(args.overrides))
        rows = run_pilot(model, dataloader, cfg.test_evaluator, sorted(set(args.ratios)), args.xi,
                         args.max_batches)
    except PilotError as err:
        print(f"pgd pilot: error: {err}", file=sys.stderr)
        return 2
    write_csv(rows, out)
    print(f"pgd pilot: wrote {out}")
    for row in rows:
        print(f"  X={row['X']:>5}%  AP={row['AP']}  dropped/image={row['dropped_per_image']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
