"""COCO AP of one short mini-profile training per variant: how data style and recipe move AP (CPU).

The numbers behind docs/mini-profile.md. Each variant generates its synthetic set (unless it uses the default
style already generated), trains one plain detector with `pgd train --set ...` overrides for a few hundred
iterations, evaluates it with `pgd eval`, and prints AP, AP50 and class-agnostic AP / AP50 (pycocotools with
useCats=0: localisation without classification). Runs go two at a time (one torch thread each), as in the DAG.

    .venv/bin/python benchmarks/mini_ap_sweep.py --out results/sweep                     # all variants, 300 it
    .venv/bin/python benchmarks/mini_ap_sweep.py --out results/sweep --variants easy plain --iters 100
    # detection from a given pretrained backbone (docs/mini-profile.md, "Pretrained backbones"):
    .venv/bin/pgd pretrain --backbone r50 --out results/sweep/p2000.pth --iters 2000 --lr 0.005 --no-mlflow
    .venv/bin/python benchmarks/mini_ap_sweep.py --out results/sweep --variants easy --iters 400 --name _p2000 \
        --pretrained results/sweep/p2000.pth
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (style overrides on top of 'easy' or a named base, pgd train --set overrides)
# The profile's backbone is pretrained (`pgd pretrain`; $PGD_PRETRAINED_DIR or results/mini/pretrained) with frozen
# BN; `_SCRATCH` restores the from-scratch setting of the measurements in docs/mini-profile.md.
_SCRATCH = ["model.backbone.init_cfg=None", "model.backbone.norm_eval=False", "model.backbone.frozen_stages=-1",
            "model.backbone.norm_cfg.requires_grad=True"]
VARIANTS: dict[str, tuple[dict, list[str]]] = {
    "easy": ({}, []),
    "easy_scratch": ({"base": "easy"}, _SCRATCH),
    "easy_lr3e-4": ({}, ["optim_wrapper.optimizer.lr=0.0003"]),
    "easy_wd1e-4": ({}, ["optim_wrapper.optimizer.weight_decay=0.0001"]),
    "easy_gn": ({}, ["model.backbone.norm_cfg={'type':'GN','num_groups':32,'requires_grad':True}"]),
    "easy_batch2": ({}, ["train_dataloader.batch_size=2"]),
    # the pretrained backbone learns at a tenth of the detector's lr (AdamW fine-tuning practice)
    "easy_bblr0.1": ({}, ["optim_wrapper.paramwise_cfg.custom_keys={'backbone':{'lr_mult':0.1}}"]),
    # training precision (profile key train_precision), set explicitly whatever the profile's default
    "easy_fp32": ({}, ["custom_hooks=[]"]),
    "easy_bf16": ({}, ["custom_hooks=[{'type':'FeatureAutocastHook','dtype':'bfloat16'}]"]),
    "hard": ({"base": "hard"}, []),
    "plain": ({"buckets": (("medium", 0.6, 35.0, 92.0), ("large", 0.4, 100.0, 115.0)), "min_visible": 0.9,
                   "texture_prob": 0.0, "clutter": (0, 1), "clutter_over_prob": 0.0, "pattern_prob": 0.0, "sensor_noise": 1.0}, []),
    "dense": ({"max_objects": 8, "buckets": (("small", 0.3, 12.0, 29.0), ("medium", 0.55, 35.0, 92.0),
                                           ("large", 0.15, 100.0, 115.0))}, []),
}


def generate(variant: str, root: Path) -> Path:
    from pgd.data import synth_coco

    style_changes = dict(VARIANTS[variant][0])
    base = style_changes.pop("base", "easy")
    style = dataclasses.replace(synth_coco.STYLES[base], **style_changes)
    synth_coco.STYLES[f"sweep_{variant}"] = style
    data = root / "data" / variant
    if not (data / "annotations" / "instances_val.json").exists():
        synth_coco.generate_coco(data, seed=0, style=f"sweep_{variant}")
    return data


def schedule(iters: int) -> list[str]:
    warmup = max(10, iters // 12)
    sched = [{"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": warmup},
             {"type": "MultiStepLR", "begin": 0, "end": iters, "by_epoch": False,
                  "milestones": [iters * 8 // 12, iters * 11 // 12], "gamma": 0.1}]
    return [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters}", f"train_cfg.val_begin={iters + 1}",
            f"param_scheduler={sched!r}"]


def agnostic_ap(ann_file: Path, dets: Path) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(dets)), "bbox")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return round(100 * ev.stats[0], 1), round(100 * ev.stats[1], 1)


def run(variant: str, args) -> dict:
    data = generate(variant, args.out)
    work = args.out / "runs" / f"{args.detector}_{args.backbone}_{variant}_{args.iters}{args.name}"
    pgd = [sys.executable, "-m", "pgd.cli"]
    sets = [f"data_root='{data}/'"] + schedule(args.iters) + VARIANTS[variant][1] + args.set
    train = pgd + ["train", "--detector", args.detector, "--backbone", args.backbone, "--role", "student",
                   "--profile", "mini", "--work-dir", str(work), "--threads", "1", "--no-mlflow"]
    for s in sets:
        train += ["--set", s]
    log = work.parent / f"{work.name}.log"  # not with_suffix: variant names may contain a dot
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        subprocess.run(train, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=True)
        subprocess.run(pgd + ["eval", "--run-dir", str(work), "--threads", "1", "--no-mlflow",
                              "--set", f"test_evaluator.outfile_prefix='{work}/pred'"],
                       cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=True)
    metrics = json.loads((work / "metrics.json").read_text())
    ap_agn, ap50_agn = agnostic_ap(data / "annotations" / "instances_val.json", work / "pred.bbox.json")
    return {"variant": variant + args.name, "iters": args.iters, "AP": metrics["AP"], "AP50": metrics["AP50"], "AP_agnostic": ap_agn,
                "AP50_agnostic": ap50_agn}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="scratch directory for data and runs")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--detector", default="atss")
    p.add_argument("--backbone", default="r50")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="extra `pgd train --set` override for every run")
    p.add_argument("--pretrained", type=Path, help="backbone checkpoint (pgd pretrain) for every run")
    p.add_argument("--name", default="", help="suffix of the run directories (to tell --set variants apart)")
    args = p.parse_args()
    args.out = args.out.resolve()
    if args.pretrained:
        if not args.pretrained.is_file():
            p.error(f"--pretrained {args.pretrained}: no such file")
        args.set.append("model.backbone.init_cfg={'type':'Pretrained','checkpoint':'%s'}" % args.pretrained.resolve())
    for v in args.variants:  # generate serially: one process owns the style registry
        generate(v, args.out)
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda v: run(v, args), args.variants):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
