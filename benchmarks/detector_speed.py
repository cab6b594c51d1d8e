"""Seconds per train iteration and peak memory of every detector x backbone at a profile's scale (CPU).

Wall seconds and CPU seconds per iteration are both reported: with one torch thread, CPU seconds approximate the
wall time on an idle machine when the machine is shared. Each configuration runs in its own subprocess so that its peak RSS (resource.getrusage ru_maxrss; tracemalloc
does not see torch's allocator) is its own. A step = data preprocessing + forward + losses + backward + SGD
update on a random batch at the profile's training size (mini: 128x128 after its 213x128 keep-ratio resize).
Teachers (role=teacher) train at the top of their multi-scale range, the worst case. Precision follows the profile
(mini: the conv trunk in bf16, `train_precision`) unless --precision says otherwise.

    .venv/bin/python benchmarks/detector_speed.py                        # all 15, mini, student size
    .venv/bin/python benchmarks/detector_speed.py --detectors atss fcos --backbones r50 --iters 5
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from pgd.vocab import BACKBONES, DETECTORS


def _cpu_seconds() -> float:
    """CPU time of this process: on a shared machine it tracks the idle wall time of a 1-thread run."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(detector: str, backbone: str, profile: str, role: str, size: int | None, batch: int | None,
            iters: int, warmup: int, threads: int, precision: str = 'profile') -> dict:
    """Runs inside the child process."""
    import torch
    torch.set_num_threads(threads)
    import logging

    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    import pgd.models  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from pgd.config import compose_config

    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    cfg = compose_config(detector, backbone, profile, role)
    resize = cfg.train_dataloader.dataset.pipeline[2]
    scales = resize.scale if resize.type == 'RandomResize' else [resize.scale]
    size = size or max(min(s) for s in scales)  # short side of the (largest) training scale
    batch = batch or cfg.train_dataloader.batch_size
    cfg.model.backbone.init_cfg = None  # speed does not depend on the weights; no pretrained checkpoint needed
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    # the profile's training hooks, as the Runner calls them: bf16 trunk (unless --precision says otherwise),
    # frozen DCN offsets (mini)
    from types import SimpleNamespace

    from mmdet.registry import HOOKS

    hook_cfgs = list(cfg.get('custom_hooks') or [])
    if precision == 'profile':
        precision = 'bf16' if any(h.get('type') == 'FeatureAutocastHook' for h in hook_cfgs) else 'fp32'
    hook_cfgs = [h for h in hook_cfgs if h.get('type') != 'FeatureAutocastHook']
    if precision == 'bf16':
        hook_cfgs.append(dict(type='FeatureAutocastHook'))
    for hook in (HOOKS.build(h) for h in hook_cfgs):
        hook.before_train(SimpleNamespace(model=model))
        if hasattr(hook, 'active'):
            hook.active = True   # FeatureAutocastHook: every step here is a train iteration
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def step():
        inputs, samples = [], []
        for _ in range(batch):
            inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
            xy = torch.rand(4, 2, generator=gen) * size * 0.6
            wh = torch.rand(4, 2, generator=gen) * size * 0.35 + 6
            s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1., 1.)))
            s.gt_instances = InstanceData(bboxes=torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1),
                                          labels=torch.randint(0, cfg.model.bbox_head.num_classes, (4,),
                                                               generator=gen))
            samples.append(s)
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
        losses = model.loss(data['inputs'], data['data_samples'])
        loss = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if k.startswith('loss'))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    for _ in range(iters):
        step()
    sec = (time.perf_counter() - start) / iters
    cpu = (_cpu_seconds() - cpu0) / iters
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return dict(detector=detector, backbone=backbone, role=role, size=size, batch=batch, precision=precision,
                sec_per_iter=round(sec, 3), cpu_sec_per_iter=round(cpu, 3), peak_rss_mb=round(peak_mb))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--profile', default='mini')
    p.add_argument('--role', default='student', choices=['student', 'teacher'])
    p.add_argument('--detectors', nargs='+', default=list(DETECTORS))
    p.add_argument('--backbones', nargs='+', default=list(BACKBONES))
    p.add_argument('--size', type=int, default=None, help='square input side (default: the profile\'s)')
    p.add_argument('--batch', type=int, default=None, help='default: the profile\'s train batch size')
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--precision', default='profile', choices=['profile', 'fp32', 'bf16'],
                   help="'profile': the profile's train_precision (default)")
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        det, bb = args.child.split(':')
        print(json.dumps(measure(det, bb, args.profile, args.role, args.size, args.batch, args.iters,
                                 args.warmup, args.threads, args.precision)))
        return 0

    rows = []
    for det in args.detectors:
        for bb in args.backbones:
            cmd = [sys.executable, __file__, '--child', f'{det}:{bb}', '--profile', args.profile,
                   '--role', args.role, '--iters', str(args.iters), '--warmup', str(args.warmup),
                   '--threads', str(args.threads), '--precision', args.precision]
            cmd += ['--size', str(args.size)] if args.size else []
            cmd += ['--batch', str(args.batch)] if args.batch else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f'{det}_{bb}: FAILED\n{out.stderr[-2000:]}', file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{det:<11}{bb:<6}{row['size']:>5}px x{row['batch']:<3}{row['precision']:>5}"
                  f"{row['sec_per_iter']:>8.3f} s/iter"
                  f"{row['cpu_sec_per_iter']:>8.3f} cpu-s/iter{row['peak_rss_mb']:>8d} MB", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
