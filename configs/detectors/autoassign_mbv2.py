# autoassign with mmdet's MobileNetV2 backbone (the Table 2 student; configs/_base_/models/mobilenet_v2.py).
_base_ = ['../_base_/models/autoassign_r50_fpn.py', '../_base_/models/mobilenet_v2.py']

model = dict(backbone={{_base_.mbv2_backbone}}, neck={{_base_.mbv2_neck}})
