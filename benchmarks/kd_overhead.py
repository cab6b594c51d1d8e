"""Cost of one PGD distillation step relative to its unavoidable parts.

    ratio = t(distillation step) / (t(teacher forward) + t(plain student train step))

The distillation step is DistillDetector.loss + backward + SGD step (teacher forward, hooks, adapter decode, PGW
masks, KD losses); the denominator times the same teacher forward (eval, no_grad) and a plain student detector's
train step on the same batch. Target: <= 1.10. Default: ATSS R101 -> R50 at the mini profile's size (213x128 input,
batch 4), the architectures of configs/detectors, random weights (timing does not depend on them; `--weights
pretrained` loads the profile's checkpoints) and random GT. `--profile paper` runs offline the same way.

    .venv/bin/python benchmarks/kd_overhead.py [--detector atss --teacher r101 --student r50 --repeats 10]
    .venv/bin/python benchmarks/kd_overhead.py --profile paper --batch 2 --warmup 1 --repeats 3

--weights random (the default) drops every backbone's pretrained init_cfg, teacher included, so the paper profile
runs offline; --img-scale W H times another input size than the profile's.

Timings are medians over interleaved repeats with one torch thread, as wall time and as process CPU time; on a
shared CPU the wall times are noisy and the CPU times (with one thread: the wall time of an idle machine) give the
verdict. --no-breakdown skips the separate timing of the KD work (two extra forwards per repeat).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def drop_pretrained(cfg) -> None:
    """Set every backbone's init_cfg in a (nested) model config to None: random weights, nothing to download."""
    if isinstance(cfg, dict):
        if isinstance(cfg.get('backbone'), dict):
            cfg['backbone']['init_cfg'] = None
        for value in cfg.values():
            drop_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            drop_pretrained(value)


def build(detector: str, teacher_bb: str, student_bb: str, profile: str, method_overrides: dict,
          random_init: bool = False):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper

    import pgd.losses  # noqa: F401
    import pgd.models  # noqa: F401
    from pgd.config import compose_config

    register_all_modules()
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel('WARNING')   # init_weights lists every parameter at INFO
    teacher_cfg = compose_config(detector, teacher_bb, profile, 'teacher').model
    student_run = compose_config(detector, student_bb, profile, 'student')
    if random_init:
        drop_pretrained(teacher_cfg)
        drop_pretrained(student_run.model)
    distill_run = compose_config(detector, student_bb, profile, 'student', method='pgd',
                                 method_overrides=method_overrides,
                                 teacher=dict(teacher_model=teacher_cfg.to_dict()))
    if random_init:
        drop_pretrained(distill_run.model)
    torch.manual_seed(0)
    distiller = MODELS.build(distill_run.model)
    distiller.init_weights()
    distiller.train()
    student = MODELS.build(student_run.model)
    student.init_weights()
    student.train()
    optim = dict(optimizer=dict(type='SGD', lr=1e-4, momentum=0.9))
    return (distiller, build_optim_wrapper(distiller, optim), student, build_optim_wrapper(student, optim),
            student_run)


def batch(model, batch_size: int, img_scale: tuple[int, int], num_classes: int, objects: int):
    from mmdet.testing import demo_mm_inputs

    w, h = img_scale
    packed = demo_mm_inputs(batch_size=batch_size, image_shapes=[(3, h, w)] * batch_size,
                            num_items=[objects] * batch_size, num_classes=num_classes)
    data = model.data_preprocessor(packed, True)
    return data['inputs'], data['data_samples']


def timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of fn(). With one thread the CPU time is the wall time of an idle machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--detector', default='atss', choices=['fcos', 'autoassign', 'atss', 'gfl', 'ddod'])
    parser.add_argument('--teacher', default='r101')
    parser.add_argument('--student', default='r50')
    parser.add_argument('--profile', default='mini')
    parser.add_argument('--batch', type=int, default=None, help="default: the profile's train_batch_size")
    parser.add_argument('--objects', type=int, default=5, help='GT boxes per image')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--preset', default='paper', choices=['paper', 'code'])
    parser.add_argument('--weights', default='random', choices=['random', 'pretrained'],
                        help="random (default): backbones randomly initialised, offline (timing does not depend on "
                             "the weights); pretrained: load the profile's checkpoints (paper: torch.hub's cache)")
    parser.add_argument('--img-scale', type=int, nargs=2, metavar=('W', 'H'), default=None,
                        help="input size (default: the profile's COCO img_scale)")
    parser.add_argument('--no-breakdown', action='store_true', help='do not time the KD work on its own')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pgd.config import load_profile

    prof = load_profile(args.profile)
    img_scale = tuple(args.img_scale or prof.img_scale['coco'])
    batch_size = args.batch or int(prof.train_batch_size)
    distiller, d_optim, student, s_optim, run = build(args.detector, args.teacher, args.student, args.profile,
                                                      dict(preset=args.preset), args.weights == 'random')
    num_classes = int(run.model.bbox_head.num_classes)
    inputs, samples = batch(distiller, batch_size, img_scale, num_classes, args.objects)
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

    def kd_only():
        # the distiller's own work on top of the two forwards: adapter decode, PGW masks, KD losses (forward)
        from pgd.losses.base import KDContext, gt_from_data_samples
        t = distiller._forward_teacher(inputs)
        with torch.no_grad():
            s = distiller._forward_student(inputs)
        metas = [d.metainfo for d in samples]

        def work():
            gb, gl, gv = gt_from_data_samples(samples)
            ctx = KDContext(student=s, teacher=t,
                            teacher_pred=distiller.adapter.dense_predictions(t.head_outs, metas),
                            gt_boxes=gb, gt_labels=gl, gt_valid=gv, batch_input_shape=tuple(inputs.shape[-2:]),
                            img_shapes=[m['img_shape'] for m in metas])
            with torch.no_grad():
                for kd in distiller.kd_losses:
                    kd(ctx)
        return timed(work)

    for _ in range(args.warmup):
        distill_step(), student_step(), teacher_forward()
    times = {'distill': [], 'student': [], 'teacher': [], 'kd': []}
    for _ in range(args.repeats):   # interleaved, so that load changes on the shared CPU hit all three alike
        times['distill'].append(timed(distill_step))
        times['student'].append(timed(student_step))
        times['teacher'].append(timed(teacher_forward))
        if not args.no_breakdown:
            times['kd'].append(kd_only())
    times = {k: v for k, v in times.items() if v}
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    ratio = {clock: med['distill'] / (med['teacher'] + med['student']) for clock, med in (('wall', wall), ('cpu', cpu))}
    print(f'{args.detector} {args.teacher} -> {args.student}, {args.profile} profile, input {img_scale[0]}x'
          f'{img_scale[1]} (padded {inputs.shape[-1]}x{inputs.shape[-2]}), batch {batch_size}, '
          f'{args.objects} GT/image, {args.threads} thread(s), {args.repeats} repeats, preset {args.preset}')
    for key, label in (('teacher', 'teacher forward (eval, no_grad)'), ('student', 'plain student train step'),
                       ('distill', 'distillation train step'), ('kd', 'adapter + masks + KD losses (fwd)')):
        if key in times:
            walls = [w for w, _ in times[key]]
            print(f'  {label:36s} CPU median {cpu[key] * 1000:9.1f} ms   wall median {wall[key] * 1000:9.1f} ms '
                  f'(min {min(walls) * 1000:9.1f}, max {max(walls) * 1000:9.1f})')
    clock = 'cpu' if args.threads == 1 else 'wall'
    verdict = 'OK' if ratio[clock] <= 1.10 else 'ABOVE TARGET'
    print(f'  overhead ratio distill / (teacher + student) = {ratio["cpu"]:.3f} CPU time, {ratio["wall"]:.3f} wall '
          f'time   (target <= 1.10 on {clock} time: {verdict})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
