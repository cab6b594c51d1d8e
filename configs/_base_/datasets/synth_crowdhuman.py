# The embedded synthetic CrowdHuman-layout set written by `pgd data crowdhuman --out results/data/synth_crowd`
# (mini profile): the real CrowdHuman config with the root re-pointed.
_base_ = './crowdhuman.py'
data_root = 'results/data/synth_crowd/'

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotation_val.odgt')
test_evaluator = val_evaluator
