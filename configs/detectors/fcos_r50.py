# fcos with a ResNet-50 backbone (the Table 1 student).
_base_ = '../_base_/models/fcos_r50_fpn.py'
