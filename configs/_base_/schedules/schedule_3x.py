# Teacher schedule of the paper: 36 epochs with multi-scale training (the scale range is set by the profile),
# LR steps at epochs 24 and 33 and linear warm-up over 500 iterations from 0.001 x lr (the official PGD
# work_configs/base/3x_setting.py:59-65; mmdet's own 3x steps at 27 / 33: recipe switch teacher_lr_steps='mmdet').
# The optimiser itself comes from the profile.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=36, val_interval=36)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[24, 33], gamma=0.1),
]

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=True, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
