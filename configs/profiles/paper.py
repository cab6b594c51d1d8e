# Paper profile: the scale of the paper's runs (Sec. 4.1 and the official PGD work_configs).
#
# A profile sets scale only: data, image sizes, batch, schedule, optimiser, backbone initialisation and BN mode,
# evaluation. It never changes the architecture (configs/detectors); pgd.config.compose_config applies it.
#
# * 8 GPUs x 4 images = batch 32 at lr 0.02, SGD momentum 0.9, wd 1e-4, grad clip 35 (the paper and
#   PGD's 1x_setting.py; mmdet's per-detector lr of 0.01 at batch 16 is the same linear rule). auto_scale_lr
#   rescales the lr when fewer GPUs run (base 32).
# * students 1x (12 ep, steps 8/11) single-scale 1333x800; teachers 3x (36 ep, steps 27/33) multi-scale
#   1333x[480..960] (CrowdHuman: 1400 wide), linear warm-up 500 iterations from 0.001.
# * ImageNet-pretrained backbones, all BN frozen (running stats and affine; "freeze all BN layers", Sec. 4.1),
#   ResNet stem + stage 1 frozen.
datasets = dict(coco='coco', crowdhuman='crowdhuman')  # configs/_base_/datasets/<name>.py
schedules = dict(student='schedule_1x', teacher='schedule_3x')  # configs/_base_/schedules/<name>.py
img_scale = dict(coco=(1333, 800), crowdhuman=(1400, 800))  # (w, h), single-scale train and test
ms_scale_range = dict(coco=[(1333, 480), (1333, 960)], crowdhuman=[(1400, 480), (1400, 960)])  # teachers

train_batch_size = 4  # per GPU
num_workers = 2
eval_images = None  # the whole val set

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=True, base_batch_size=32)

_frozen_bn = dict(norm_eval=True, norm_cfg=dict(type='BN', requires_grad=False))
backbone = dict(
    r50=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'), frozen_stages=1, **_frozen_bn),
    r101=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101'), frozen_stages=1, **_frozen_bn),
    # open-mmlab://mmdet/mobilenet_v2 is mmcls' mobilenet_v2_batch256_imagenet-ff34753d.pth, the checkpoint PGD uses
    mbv2=dict(init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'), frozen_stages=-1,
              **_frozen_bn),
)

runtime = dict(default_hooks=dict(logger=dict(interval=50)))
