# Mini profile: the whole pipeline on the embedded synthetic data, on a 2-core CPU, in the paper's training regime
# (students trained to a fixed fraction of converged teachers; docs/mini-profile.md gives its DAG time).
#
# A profile sets scale only: data, image sizes, batch, schedule, optimiser, backbone initialisation and BN mode,
# evaluation. It never changes the architecture (configs/detectors); pgd.config.compose_config applies it.
# docs/mini-profile.md records the measurements behind the values below (dated, with commits and machine speeds).
#
# * data: results/data/synth_coco and results/data/synth_crowd (written by `pgd data`).
# * images: the paper's 1333x800 test scale shrunk to 213x128; teachers train multi-scale over short sides
#   77..154 (the paper's 480..960 range, same ratio to the test scale).
# * backbones pretrained on synthetic classification (six shapes + the crowd set's person; `pgd pretrain`, below),
#   then BN frozen as the paper does around ImageNet weights; the ResNets freeze their stem and stages 1-3 (the
#   paper: stage 1; see backbone below), MobileNetV2 trains whole.
# * iteration-based schedules with the paper's shape (linear warm-up, x0.1 steps at 8/12 and 11/12 of the run) and
#   its 3:1 teacher:student ratio (3x vs 1x): teachers 4050 iterations (40 passes over the 400 training images),
#   students 1350. Warm-up is max(10, iters / 12) iterations.
# * student_init 'teacher': every distilled student starts from its teacher's neck and head, so that Table 1
#   compares KD losses rather than initialisations; its "Inherit only" control row (configs/distill/inherit.py) is
#   that initialisation with no KD loss. The paper profile keeps each method's official initialisation.
#   docs/protocol.md gives the measurement of both choices.
# * optimiser: AdamW lr 1e-3, wd 0.05 (clip 35). At this scale SGD learned far more slowly (and diverged at a
#   higher lr), while the AdamW lr / wd / normalisation variants tried all land within +-1 AP of each other.
#   The paper's SGD recipe stays in the paper profile.
# * speed: the conv trunk trains in bf16 (train_precision below), DDOD's frozen zero-offset DCN runs as a plain
#   conv (FreezeDCNOffsetsHook in `runtime`), AdamW is fused; the workflow runs 2 jobs at a time, 1 thread each.
#   DAG wall times differ between 2-core machines: compare `benchmarks/detector_speed.py` first.
datasets = dict(coco='synth_coco', crowdhuman='synth_crowdhuman')
img_scale = dict(coco=(213, 128), crowdhuman=(213, 128))  # (w, h): single-scale train and test
ms_scale_range = dict(coco=[(213, 77), (213, 154)], crowdhuman=[(213, 77), (213, 154)])  # teachers

train_batch_size = 4
num_workers = 0  # 1 torch thread per job, 2 jobs at once: worker processes would only compete for the 2 cores
eval_images = None
# evaluation 4 images at a time: the synthetic val sets are each of one image size, so there is no batch padding and
# the metrics equal batch 1's, in less time per job; larger batches gain little more.
# The paper profile keeps mmdet's batch 1 (real images of mixed sizes would be padded to the batch's largest).
test_batch_size = 4

_student_iters = 1350
student_init = 'teacher'
# Students train at one scale with flips and their teachers are frozen, so a teacher's outputs depend on (image,
# flip) alone: each teacher runs once over the training set (workflow rule teacher_cache) and its students read
# the outputs back instead of running it every step (pgd.models.teacher_cache; about a third of a KD step).
teacher_cache = True
# $PGD_MINI_TEACHER_ITERS changes it; the workflow sets it from `--config teacher_iters=N`.
_teacher_iters_text = '{{$PGD_MINI_TEACHER_ITERS:4050}}'
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
# Students: one at half run (~2 s a save, up to ~390 MB with AdamW state): a killed ~15-minute job loses at most
# half of it. The finished run's checkpoints are deleted (workflow rule train_teacher).
schedules = dict(student=_schedule(_student_iters, resume_points=2),
                 teacher=_schedule(_teacher_iters, resume_points=4))

# dcn_offset_lr_mult=0: DDOD's deformable first tower conv keeps its offsets at their zero init (a plain 3x3 conv,
# same parameters). Trained with AdamW at this scale, the learned offsets grew with the FPN outputs until every
# sampling point fell outside the map: DDOD's towers output a constant and every DDOD PGD loss was ~0.
# Only DCN layers have offsets, so no other detector is affected; the paper profile learns them.
optim_wrapper = dict(
    type='OptimWrapper',
    # fused: one kernel for the whole update. torch's default CPU AdamW loops over the tensors in Python, a large
    # share of a teacher step.
    optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.05, fused=True),
    paramwise_cfg=dict(dcn_offset_lr_mult=0.0),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=train_batch_size)

# Backbones: pretrained once per backbone by `pgd pretrain` (workflow rule pretrain_backbone) on synthetic shape
# classification, the mini profile's stand-in for the paper's ImageNet weights (none exist offline); then, as in the
# paper, BN frozen (statistics and affine) and the ResNet stem + stage 1 frozen. Why: trained from scratch, the
# detectors localised objects but hardly told the six classes apart; a pretrained backbone multiplies AP at the
# same detection schedule.
# lr 5e-3 with a 200-iteration warm-up: what the detectors gain depends on the pretraining lr more than on its
# accuracy, and 5e-3 gave the strongest teachers of the rates tried; a shorter warm-up left R101 near chance loss
# for most of its run. 1500 iterations: shorter pretraining gave weaker teachers. 64 px: 32 px learns markedly
# less per iteration.
# person_class: the crowd set's person figure as a seventh class (pgd.data.synth_shapes; same cost), so that the
# CrowdHuman teacher's backbone has seen person-like figures (without it lr 5e-3 weakened that teacher).
# The checkpoints' directory: `--set pretrained_dir=...` (the workflow), else $PGD_PRETRAINED_DIR, else below.
# The workflow passes this dict to the pretraining jobs as a param: changing it retrains the backbones and every
# detector after them.
pretrain = dict(iters=1500, warmup_iters=200, batch_size=32, image_size=64, lr=0.005, weight_decay=0.05,
                log_interval=50, precision='bf16', person_class=True)

# backbone / neck / head convolutions in bf16 while training (pgd.models.feature_autocast); assignment and losses fp32.
# The same AP as fp32 at 1.6-1.8x faster steps.
train_precision = 'bf16'
_pretrained = '{{$PGD_PRETRAINED_DIR:results/mini/pretrained}}'
_frozen_bn = dict(norm_eval=True, norm_cfg=dict(type='BN', requires_grad=False))
backbone = dict(
    # R50 is only ever a student (or the self-distillation teacher, which is the plain student run): stem + stages
    # 1-3 frozen as R101's. A fifth cheaper step, and at least as strong a student at this data scale
    # (docs/mini-profile.md).
    r50=dict(init_cfg=dict(type='Pretrained', checkpoint=_pretrained + '/r50.pth'), frozen_stages=3, **_frozen_bn),
    # R101 is only ever a teacher: stem + stages 1-3 frozen (only stage 4, the neck and the head train), a step a
    # third cheaper than with stage 1 frozen.
    # The backbone is pretrained on the detection sets' own renderer, so its frozen features already fit them;
    # the paper profile keeps the paper's stage 1 (ImageNet features do not fit COCO that closely).
    r101=dict(init_cfg=dict(type='Pretrained', checkpoint=_pretrained + '/r101.pth'), frozen_stages=3,
              **_frozen_bn),
    mbv2=dict(init_cfg=dict(type='Pretrained', checkpoint=_pretrained + '/mbv2.pth'), frozen_stages=-1,
              **_frozen_bn))

# FreezeDCNOffsetsHook: the DCN offsets above never leave zero (lr multiplier 0); frozen, DDOD's deformable conv
# runs as the plain convolution it then is (exactly: pgd/models/layers/small_input_dcn.py) instead of through
# mmcv's CPU deform-conv kernels, which took most of DDOD's train step.
runtime = dict(default_hooks=dict(logger=dict(interval=10)), custom_hooks=[dict(type='FreezeDCNOffsetsHook')])
