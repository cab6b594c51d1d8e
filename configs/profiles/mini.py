# Mini profile: the whole pipeline on the embedded synthetic data, on CPU, in about an hour (budget below).
#
# A profile sets scale only: data, image sizes, batch, schedule, optimiser, backbone initialisation and BN mode,
# evaluation. It never changes the architecture (configs/detectors); pgd.config.compose_config applies it.
#
# * data: results/data/synth_coco and results/data/synth_crowd (written by `pgd data`).
# * images: the paper's 1333x800 test scale shrunk to 213x128; teachers train multi-scale over short sides
#   77..154 (the paper's 480..960 range, same ratio to the test scale).
# * backbones pretrained on synthetic classification (six shapes + the crowd set's person; `pgd pretrain`, below),
#   then BN and the stem + stage 1 frozen, as the paper does around ImageNet weights; the R101 teachers freeze
#   stages 1-3 (see backbone.r101).
# * iteration-based schedules with the paper's shape (linear warm-up, x0.1 steps at 8/12 and 11/12 of the run).
#   The budget, not the 3:1 ratio of the paper's 3x / 1x, sets the lengths: teachers 900 iterations, students
#   60 (see "budget" below). Warm-up is max(10, iters / 12) iterations, so a 60-iteration student spends 10 of
#   them warming up rather than 20.
# * optimiser: AdamW lr 1e-3, wd 0.05 (clip 35). Chosen when the detectors trained from scratch: there SGD (lr 0.01, batch 4) reached only
#   COCO AP 3.4 after 300 ATSS-R50 iterations and its loss fell far more slowly (loss 2.75 vs 2.15 at iteration 50);
#   SGD at lr 0.03 diverged. AdamW lr 3e-4 / 1e-3 / 3e-3, wd 1e-4, GroupNorm in the backbone and batch 2 x 200 it
#   all land within +-1 AP of each other (docs/mini-profile.md): the recipe is not what holds AP down.
#   The paper's SGD recipe stays in the paper profile.
#
# Budget (whole mini DAG: 3 pretrainings, 6 teachers, 79 students, each run trained and evaluated in one job; 2
# jobs at a time on 2 cores, 1 thread each). The 2-core machines differ: compare `benchmarks/detector_speed.py`
# (ATSS R50, mini, bf16, 1 thread) before comparing DAG times - 0.33 s/it on the fourth session's machine, 0.52 on
# the fifth's (docs/mini-profile.md). Training runs the conv trunk in bf16 (train_precision below: 1.6-1.8x faster
# steps), DDOD's frozen zero-offset DCN as a plain conv (FreezeDCNOffsetsHook in `runtime`), AdamW fused.
#   fourth session (0.33 s/it machine, before fused AdamW and the DDOD fast path): 93 min of wall time;
#     pretraining R101 956 s (gates the teachers), R50 590 s, MobileNetV2 305 s; teachers 451-486 s, DDOD ~1020 s;
#     students ~58 s (MobileNetV2 ~40, DDOD ~110).
#   fifth session (0.52 s/it machine, this profile): see docs/mini-profile.md; pretraining R101 1551 s, R50 918 s,
#     MobileNetV2 469 s; teachers 668-692 s (DDOD now like the others); students 77 s mean; 111.6 min in all.
#   eighth session (0.52 s/it machine, person pretraining, R101 stages 1-3 frozen, 900-iteration teachers, before
#     batch-4 evaluation): pretraining R101 1462 s, R50 878 s, MobileNetV2 445 s; teachers 662-677 s; students 74 s
#     mean; 107.8 min in all (docs/results/mini-2026-12-01/).
datasets = dict(coco='synth_coco', crowdhuman='synth_crowdhuman')
img_scale = dict(coco=(213, 128), crowdhuman=(213, 128))  # (w, h): single-scale train and test
ms_scale_range = dict(coco=[(213, 77), (213, 154)], crowdhuman=[(213, 77), (213, 154)])  # teachers

train_batch_size = 4
num_workers = 0  # 1 torch thread per job, 2 jobs at once: worker processes would only compete for the 2 cores
eval_images = None
# evaluation 4 images at a time: the same metrics to the digit on the synthetic val sets (each of one image size, so
# no batch padding), 4-6 s less per job (1 thread: ATSS R50 PGD, 100 COCO images, 20.5 s at batch 1, 14.3 at 4,
# 13.6 at 8; DDOD R50 PGD, 80 crowd images, 19.6 -> 16.0 s).
# The paper profile keeps mmdet's batch 1 (real images of mixed sizes would be padded to the batch's largest).
test_batch_size = 4

_student_iters = 60
# 900, with the R101 stem and stages 1-3 frozen (backbone.r101 below): the same CPU time as 600 iterations with
# only stage 1 frozen (0.50 vs 0.75 CPU-s per ATSS R101 step), and far stronger teachers. Measured 2026-11-30 from
# the lr 5e-3 + person backbone (docs/mini-profile.md): FCOS 32.0, AutoAssign 29.5, ATSS 45.2, GFL 41.2, DDOD 44.2,
# CrowdHuman DDOD MR 74.0 / AP 61.3; 600 iterations with stage 1 frozen gave 10-32 (GFL 19.9 / 23.2 over two seeds).
# 1200 (`teacher_iters=1200`, +1/3 teacher time): AutoAssign 51.7, FCOS 36.4.
# $PGD_MINI_TEACHER_ITERS changes it; the workflow sets it from `--config teacher_iters=N`.
_teacher_iters_text = '{{$PGD_MINI_TEACHER_ITERS:900}}'
if not _teacher_iters_text.isdigit() or int(_teacher_iters_text) < 1:
    raise ValueError(f'PGD_MINI_TEACHER_ITERS (teacher_iters) must be a positive integer number of iterations, '
                     f'got {_teacher_iters_text!r}')
_teacher_iters = int(_teacher_iters_text)


def _schedule(iters, resume_points):
    """``resume_points`` checkpoints per run (two kept); 0: none, a killed run restarts from scratch."""
    if resume_points:
        checkpoint = dict(type='CheckpointHook', interval=max(iters // resume_points, 1), by_epoch=False,
                          max_keep_ckpts=2)
    else:
        checkpoint = dict(type='CheckpointHook', interval=iters + 1, by_epoch=False, save_last=False)
    return dict(
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters, val_begin=iters + 1),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=max(10, iters // 12)),
            dict(type='MultiStepLR', begin=0, end=iters, by_epoch=False,
                 milestones=[iters * 8 // 12, iters * 11 // 12], gamma=0.1),
        ],
        default_hooks=dict(checkpoint=checkpoint),
        log_processor=dict(type='LogProcessor', window_size=10, by_epoch=False),
    )


# Teachers: a checkpoint every quarter run, two kept: a kill (even during a save) resumes, losing < 1/4 run.
# Students: none. A student is a ~1-minute job, and each save writes the student, its AdamW state and the frozen
# teacher (~390 MB for R50 + R101, ~2 s here): 4 saves were ~10 % of a student job, more than a rerun risks.
schedules = dict(student=_schedule(_student_iters, resume_points=0),
                 teacher=_schedule(_teacher_iters, resume_points=4))

# dcn_offset_lr_mult=0: DDOD's deformable first tower conv keeps its offsets at their zero init (a plain 3x3 conv,
# same parameters). Trained from scratch with AdamW, the FPN outputs grow to |x| ~ 100-1300 and the learned offsets
# with them: the 400-iteration DDOD R101 teacher sampled 643 px away on average on a 16x16 map, so its towers
# output a constant (spatial std 0) and every DDOD PGD loss was ~0. docs/mini-profile.md has the measurements.
# Only DCN layers have offsets, so no other detector is affected; the paper profile learns them.
optim_wrapper = dict(
    type='OptimWrapper',
    # fused: one kernel for the whole update. torch's default CPU AdamW loops over tensors in Python: 0.095 s
    # per step for R101's 42 M trainable backbone weights, fused 0.026 s; it was ~15 % of a teacher step.
    optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.05, fused=True),
    paramwise_cfg=dict(dcn_offset_lr_mult=0.0),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=train_batch_size)

# Backbones: pretrained once per backbone by `pgd pretrain` (workflow rule pretrain_backbone) on synthetic shape
# classification, the mini profile's stand-in for the paper's ImageNet weights (none exist offline); then, as in the
# paper, BN frozen (statistics and affine) and the ResNet stem + stage 1 frozen. Why: trained from scratch, the
# detectors localised objects but hardly told the six classes apart (the 400-iteration ATSS R101 teacher's top
# detections were triangle or ring whatever the object; AP 8.8). Measured on ATSS R50, 400 detection iterations:
# from scratch AP 6.9 (1000 iterations: 17.9); from a backbone pretrained 600 / 2000 iterations at lr 2e-3
# (held-out accuracy 72 % / 99 %) 18.1 / 23.3; 2000 iterations at lr 5e-3 (99.2 %) 32.9 (docs/mini-profile.md).
# 64 px beats 32 px at equal iterations (1000 it: 91.6 % vs 80-82 % held-out accuracy).
# lr: what the detectors gain from pretraining depends on its lr far more than on its accuracy. 2026-11-30, R101,
# 1500 iterations, then the ATSS / GFL R101 teachers at their 600 iterations (same data, seed, detection recipe):
#   lr 2e-3, warm-up 75 (the previous setting): accuracy 97.9 %, teacher AP ATSS 22.7 (18.6 in another DAG),
#     GFL 13.1 (12.1);
#   lr 5e-3, warm-up 200: accuracy 98.6 %, ATSS 32.2, GFL 19.9;
#   lr 3e-3, warm-up 100, 1000 iterations: 93.9 %, ATSS 18.7; lr 1e-2, warm-up 300: 96.9 %, ATSS 26.8.
# All five COCO teachers from the lr 5e-3 backbone: FCOS 10.0, AutoAssign 25.9, ATSS 32.2, GFL 19.9, DDOD 29.8
# (lr 2e-3: 14.2 / 15.5 / 22.7 / 13.1 / 26.5), mean +5.2; but the CrowdHuman DDOD teacher loses (MR 87.5 vs 81.9,
# AP 44.0 vs 52.3): its person-like figures were not among the six pretraining classes.
# person_class: the crowd set's figure as a seventh class (pgd.data.synth_shapes; same cost). R101, lr 5e-3: accuracy
# 98.0 %; DDOD CrowdHuman teacher (600 it) back to MR 82.5 / AP 52.8 / JI 39.1; ATSS COCO teacher (600 it) 22.6
# (32.2 without it: one backbone each, backbone-to-backbone spread ~4 AP). With the 900-iteration, stages-1-3-frozen
# teachers above: five COCO teachers 29.5-45.2, crowd MR 74.0 / AP 61.3.
# An earlier DAG ran lr 5e-3 with a 40-iteration warm-up over 800 iterations: R101 sat near chance loss for ~500
# of them and ended at 41 %. With 200 iterations of warm-up it leaves chance about as early as lr 2e-3 does (loss
# at iteration 200: 1.62 vs 1.58; chance is 1.79).
# CPU cost, 1 thread, per iteration at 64 px, batch 32, bf16 autocast + channels_last (pgd pretrain): R101 ~1.0 s
# on the 0.52 s/it machine (0.6 s on the 0.33 s/it one), R50 0.6, MobileNetV2 0.3.
# The checkpoints' directory: `--set pretrained_dir=...` (the workflow), else $PGD_PRETRAINED_DIR, else below.
# The workflow passes this dict to the pretraining jobs as a param: changing it retrains the backbones and every
# detector after them.
pretrain = dict(iters=1500, warmup_iters=200, batch_size=32, image_size=64, lr=0.005, weight_decay=0.05,
                log_interval=50, precision='bf16', person_class=True)

# backbone / neck / head convolutions in bf16 while training (pgd.models.feature_autocast); assignment and losses fp32.
# ATSS R50, 400 iterations from the same pretrained backbone: fp32 AP 17.6, bf16 17.8 (docs/mini-profile.md).
train_precision = 'bf16'
_pretrained = '{{$PGD_PRETRAINED_DIR:results/mini/pretrained}}'
_frozen_bn = dict(norm_eval=True, norm_cfg=dict(type='BN', requires_grad=False))
backbone = dict(
    r50=dict(init_cfg=dict(type='Pretrained', checkpoint=_pretrained + '/r50.pth'), frozen_stages=1, **_frozen_bn),
    # R101 is only ever a teacher: stem + stages 1-3 frozen (only stage 4, the neck and the head train). A third
    # cheaper step than with stage 1 frozen, so 900 teacher iterations cost what 600 did; GFL R101 from the same
    # (shape-only) backbone: 38.2 AP at 900 iterations this way, 19.9 / 23.2 (two seeds) at 600 with stage 1 frozen.
    # The backbone is pretrained on the detection sets' own renderer, so its frozen features already fit them;
    # the paper profile keeps the paper's stage 1 (ImageNet features do not fit COCO that closely).
    r101=dict(init_cfg=dict(type='Pretrained', checkpoint=_pretrained + '/r101.pth'), frozen_stages=3,
              **_frozen_bn),
    mbv2=dict(init_cfg=dict(type='Pretrained', checkpoint=_pretrained + '/mbv2.pth'), frozen_stages=-1,
              **_frozen_bn))

# FreezeDCNOffsetsHook: the DCN offsets above never leave zero (lr multiplier 0); frozen, DDOD's deformable conv
# runs as the plain convolution it then is (exactly: pgd/models/layers/small_input_dcn.py) instead of through
# mmcv's CPU deform-conv kernels, ~0.6 s of DDOD's ~1 s train step.
runtime = dict(default_hooks=dict(logger=dict(interval=10)), custom_hooks=[dict(type='FreezeDCNOffsetsHook')])
