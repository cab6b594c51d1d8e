# mmdet's MobileNetV2 as a detector backbone (the Table 2 students), shared by configs/detectors/*_mbv2.py.
# out_indices (2, 4, 7) are the stride-8/16/32 stages (32, 96 and 1280 channels); PGD's config takes (1, 2, 4, 7)
# with start_level=1, which builds the same FPN. A detector file uses them as
# `model = dict(backbone={{_base_.mbv2_backbone}}, neck={{_base_.mbv2_neck}})` (pgd.config copies only a detector
# file's `model` and `custom_imports`, so these two names stay out of the composed run config).
mbv2_backbone = dict(
    _delete_=True,
    type='MobileNetV2',
    out_indices=(2, 4, 7),
    frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True),
    act_cfg=dict(type='ReLU6'),
    norm_eval=False,
    init_cfg=None)
mbv2_neck = dict(in_channels=[32, 96, 1280], start_level=0)
