# Student schedule of the paper: 12 epochs, LR steps at epochs 8 and 11, linear warm-up over 500 iterations
# from 0.001 x lr (the official PGD work_configs/base/1x_setting.py). The optimiser itself comes from the profile.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=True, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
