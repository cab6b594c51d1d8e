# autoassign with a ResNet-101 backbone (the teacher).
_base_ = '../_base_/models/autoassign_r50_fpn.py'

model = dict(backbone=dict(depth=101))
