# atss with a ResNet-50 backbone (the Table 1 student).
_base_ = '../_base_/models/atss_r50_fpn.py'
