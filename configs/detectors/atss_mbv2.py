# atss with mmdet's MobileNetV2 backbone (the Table 2 student). out_indices (2, 4, 7) are the stride-8/16/32
# stages (32, 96 and 1280 channels); PGD's config takes (1, 2, 4, 7) with start_level=1, which builds the same FPN.
_base_ = '../_base_/models/atss_r50_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        out_indices=(2, 4, 7),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        act_cfg=dict(type='ReLU6'),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 96, 1280], start_level=0))
