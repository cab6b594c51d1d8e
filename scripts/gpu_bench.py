"""The measuring parts of scripts/gpu_check.sh (one lent GPU machine, no internet); each also runs on a CPU at a
small size, which is how they are tested.

    python scripts/gpu_bench.py data --out DIR [--num-train 64 --num-val 8 --width 1333 --height 800]
    python scripts/gpu_bench.py deform --out FILE.json
    python scripts/gpu_bench.py kd --detector atss|ddod --out FILE.json [--batch 4 --width 1333 --height 800]
    python scripts/gpu_bench.py summary --runs-dir DIR --out FILE.json

* data: the embedded synthetic COCO renderer at max(width, height) px, each image cropped to width x height (objects
  cut by the crop are dropped) and written in COCO 2017's layout (annotations/instances_{train,val}2017.json,
  train2017/, val2017/) with COCO class names, so that the paper profile's 80-class COCO dataset config reads it.
* deform: mmcv's deformable convolutions (DDOD's head) on the GPU: forward + backward, time per call, and the
  largest difference to the same op on the CPU.
* kd: the KD overhead ratio at paper resolution, t(distillation step) / (t(teacher forward) + t(plain student
  step)), timed with CUDA synchronisation, random-init weights (no ImageNet offline), and peak GPU memory of each.
* summary: s/iter (median of the logged windows after the first) and peak memory of `pgd train` runs, from
  mmengine's log.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------------------------ data
def make_data(out: Path, num_train: int, num_val: int, width: int, height: int, seed: int) -> dict:
    from PIL import Image

    from mmdet.datasets import CocoDataset
    from pgd.data.synth_coco import generate_coco

    out = Path(out)
    raw = out / "_square"
    generate_coco(raw, seed=seed, num_train=num_train, num_val=num_val, image_size=max(width, height),
                  style="easy")
    coco_names = CocoDataset.METAINFO["classes"]
    counts = {}
    for split in ("train", "val"):
        ann = json.loads((raw / "annotations" / f"instances_{split}.json").read_text())
        img_dir = out / f"{split}2017"
        img_dir.mkdir(parents=True, exist_ok=True)
        for img in ann["images"]:
            with Image.open(raw / "images" / split / img["file_name"]) as im:
                im.crop((0, 0, width, height)).save(img_dir / img["file_name"])
            img["width"], img["height"] = width, height
        kept = [a for a in ann["annotations"]
                if a["bbox"][0] + a["bbox"][2] <= width and a["bbox"][1] + a["bbox"][3] <= height]
        ann["annotations"] = kept
        # COCO's 80 categories (ids 1-80), the synthetic shapes as the first six: the paper profile's dataset
        # config selects categories by COCO class name and wants all of them in the file
        assert [c["id"] for c in ann["categories"]] == list(range(1, len(ann["categories"]) + 1))
        ann["categories"] = [dict(id=i + 1, name=name, supercategory="synthetic")
                             for i, name in enumerate(coco_names)]
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(ann))
        counts[split] = dict(images=len(ann["images"]), objects=len(kept))
    shutil.rmtree(raw)
    return dict(root=str(out), width=width, height=height, **counts)


# ------------------------------------------------------------------------------------------------------ timing
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int, warmup: int) -> tuple[list[float], float | None]:
    """Seconds per call (after warm-up) and the peak memory (MB) of the timed calls."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return times, peak


def deform_check(device_name: str, repeats: int, height: int, width: int) -> dict:
    """DDOD's deformable convolutions (mmcv.ops DeformConv2d and ModulatedDeformConv2d) on the device: forward and
    backward on a batch of 2 maps of 256 x height x width (P3 of a 1333x800 input: 100x166), against the CPU
    kernel on a corner of the same tensors."""
    import torch
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack

    device = torch.device(device_name)
    torch.manual_seed(0)
    report = {}
    for name, cls in (("DeformConv2d", DeformConv2dPack), ("ModulatedDeformConv2d", ModulatedDeformConv2dPack)):
        op = cls(256, 256, 3, padding=1).to(device)
        # non-zero offsets, so that the bilinear sampling (not a plain conv) is what runs
        torch.nn.init.normal_(op.conv_offset.weight, std=0.01)
        x = torch.randn(2, 256, height, width, device=device, requires_grad=True)

        def step():
            op(x).sum().backward()

        times, peak = _time(step, device, repeats, warmup=2)
        entry = dict(map=f"2x256x{height}x{width}", ms_fwd_bwd=1000 * statistics.median(times), peak_mb=peak)
        with torch.no_grad():
            y = op(x)
        try:
            cpu_op = cls(256, 256, 3, padding=1)
            cpu_op.load_state_dict({k: v.cpu() for k, v in op.state_dict().items()})
            with torch.no_grad():
                y_cpu = cpu_op(x.detach().cpu()[:, :, :24, :40])
                y_dev = op(x.detach()[:, :, :24, :40]).cpu()
            entry["max_abs_diff_vs_cpu"] = float((y_cpu - y_dev).abs().max())
        except (RuntimeError, NotImplementedError) as err:   # an mmcv build without the CPU kernel
            entry["max_abs_diff_vs_cpu"] = f"no CPU kernel: {str(err).splitlines()[0]}"
        entry["finite"] = bool(torch.isfinite(y).all())
        report[name] = entry
    return report


def _build_pair(detector: str, teacher_bb: str, student_bb: str, profile: str, device):
    """A PGD distiller and a plain student of the profile's architecture, random-init (no ImageNet weights)."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    import pgd.losses  # noqa: F401
    import pgd.models  # noqa: F401
    from pgd.config import compose_config

    register_all_modules()
    MMLogger.get_current_instance().setLevel("WARNING")
    teacher = compose_config(detector, teacher_bb, profile, "teacher",
                             overrides={"model.backbone.init_cfg": None}).model
    student_run = compose_config(detector, student_bb, profile, "student",
                                 overrides={"model.backbone.init_cfg": None})
    distill_run = compose_config(detector, student_bb, profile, "student", method="pgd",
                                 teacher=dict(teacher_model=teacher.to_dict()),
                                 overrides={"model.student.backbone.init_cfg": None})
    torch.manual_seed(0)
    models = []
    for cfg in (distill_run.model, student_run.model):
        m = MODELS.build(cfg)
        m.init_weights()
        m.to(device).train()
        optim = build_optim_wrapper(m, dict(optimizer=dict(type="SGD", lr=1e-4, momentum=0.9)))
        models.append((m, optim))
    return models, int(student_run.model.bbox_head.num_classes)


def kd_overhead(detector: str, teacher_bb: str, student_bb: str, profile: str, batch: int, width: int,
                height: int, objects: int, repeats: int, warmup: int, device_name: str) -> dict:
    import torch
    from mmdet.testing import demo_mm_inputs

    device = torch.device(device_name)
    models, num_classes = _build_pair(detector, teacher_bb, student_bb, profile, device)
    (distiller, d_optim), (student, s_optim) = models
    packed = demo_mm_inputs(batch_size=batch, image_shapes=[(3, height, width)] * batch,
                            num_items=[objects] * batch, num_classes=num_classes)
    data = distiller.data_preprocessor(packed, True)
    inputs, samples = data["inputs"], data["data_samples"]
    teacher = distiller.teacher

    def distill_step():
        total, _ = distiller.parse_losses(distiller.loss(inputs, samples))
        d_optim.update_params(total)

    def student_step():
        total, _ = student.parse_losses(student.loss(inputs, samples))
        s_optim.update_params(total)

    def teacher_forward():
        with torch.no_grad():
            teacher.bbox_head(teacher.extract_feat(inputs))

    result = dict(detector=detector, teacher=teacher_bb, student=student_bb, profile=profile, batch=batch,
                  input=f"{width}x{height}", padded=f"{inputs.shape[-1]}x{inputs.shape[-2]}", objects=objects,
                  device=str(device), repeats=repeats)
    med = {}
    for name, fn in (("teacher_forward", teacher_forward), ("student_step", student_step),
                     ("distill_step", distill_step)):
        times, peak = _time(fn, device, repeats, warmup)
        med[name] = statistics.median(times)
        result[name] = dict(ms_median=1000 * med[name], ms_min=1000 * min(times), ms_max=1000 * max(times),
                            peak_mb=peak)
    result["ratio"] = med["distill_step"] / (med["teacher_forward"] + med["student_step"])
    return result


# ------------------------------------------------------------------------------------------------------ summary
_TRAIN_LINE = re.compile(r"(?:Iter\(train\) \[\s*(?P<iter>\d+)/\d+\]|Epoch\(train\)\s+\[\d+\]\[\s*\d+/\d+\])"
                         r".*?\btime: (?P<time>[\d.]+)\s+data_time: (?P<data>[\d.]+)"
                         r"(?:\s+memory: (?P<memory>\d+))?.*?\bloss: (?P<loss>[\d.]+)")


def train_summary(work_dir: Path) -> dict:
    """s/iter and peak memory of one `pgd train` run from mmengine's log (<work_dir>/<timestamp>/<timestamp>.log):
    each `Iter(train)` line holds the mean time and data time of its logging window and, on CUDA, the peak
    memory in MB."""
    logs = sorted(Path(work_dir).glob("*/*.log"))
    if not logs:
        return dict(work_dir=str(work_dir), error="no mmengine log: the run did not start")
    train = [m for m in map(_TRAIN_LINE.search, logs[-1].read_text(errors="replace").splitlines()) if m]
    if not train:
        return dict(work_dir=str(work_dir), error="no training iterations in the log")
    steady = train[1:] or train          # the first window holds cudnn autotuning and data-loader start-up
    out = dict(work_dir=str(work_dir), log_windows=len(train), last_iter=train[-1]["iter"] and int(train[-1]["iter"]),
               s_per_iter=statistics.median(float(m["time"]) for m in steady),
               data_s_per_iter=statistics.median(float(m["data"]) for m in steady),
               last_loss=float(train[-1]["loss"]))
    mem = [int(m["memory"]) for m in train if m["memory"]]
    if mem:
        out["peak_memory_mb"] = max(mem)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="synthetic COCO-2017-layout set at width x height")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--num-train", type=int, default=64)
    d.add_argument("--num-val", type=int, default=8)
    d.add_argument("--width", type=int, default=1333)
    d.add_argument("--height", type=int, default=800)
    d.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("deform", help="mmcv deformable convolutions on the device")
    f.add_argument("--out", required=True, type=Path)
    f.add_argument("--device", default="cuda")
    f.add_argument("--repeats", type=int, default=10)
    f.add_argument("--map", default="100x166", help="feature map HxW (default: P3 of 1333x800)")
    k = sub.add_parser("kd", help="KD overhead ratio at paper resolution")
    k.add_argument("--out", required=True, type=Path)
    k.add_argument("--detector", default="atss", choices=["fcos", "autoassign", "atss", "gfl", "ddod"])
    k.add_argument("--teacher", default="r101")
    k.add_argument("--student", default="r50")
    k.add_argument("--profile", default="paper")
    k.add_argument("--batch", type=int, default=4, help="images per GPU (paper: 4)")
    k.add_argument("--width", type=int, default=1333)
    k.add_argument("--height", type=int, default=800)
    k.add_argument("--objects", type=int, default=10, help="GT boxes per image")
    k.add_argument("--repeats", type=int, default=20)
    k.add_argument("--warmup", type=int, default=3)
    k.add_argument("--device", default="cuda")
    s = sub.add_parser("summary", help="s/iter and memory of pgd train runs")
    s.add_argument("--runs-dir", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    if args.cmd == "data":
        result = make_data(args.out, args.num_train, args.num_val, args.width, args.height, args.seed)
        args.out.joinpath("summary.json").write_text(json.dumps(result, indent=1))
    elif args.cmd == "deform":
        height, width = (int(v) for v in args.map.split("x"))
        result = deform_check(args.device, args.repeats, height, width)
    elif args.cmd == "kd":
        result = kd_overhead(args.detector, args.teacher, args.student, args.profile, args.batch, args.width,
                             args.height, args.objects, args.repeats, args.warmup, args.device)
    else:
        result = {run.name: train_summary(run) for run in sorted(args.runs_dir.iterdir()) if run.is_dir()}
    if args.cmd != "data":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
