# autoassign with a ResNet-50 backbone (the Table 1 student).
_base_ = '../_base_/models/autoassign_r50_fpn.py'
