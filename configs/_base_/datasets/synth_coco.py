# The embedded synthetic COCO-format set written by `pgd data coco --out results/data/synth_coco` (mini profile):
# the real COCO config with its root, files and classes replaced.
_base_ = './coco.py'
data_root = 'results/data/synth_coco/'
# the six shape categories of pgd.data.synth_coco.CLASSES (category ids 1..6)
metainfo = dict(classes=('circle', 'square', 'triangle', 'star', 'ring', 'cross'))
num_classes = 6

train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        validate_cfg=dict(_delete_=True)))  # generated data: every defect is an error
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
