# EfficientFormerV2 on ImageNet-1k: EfficientFormer's recipe (./efficientformer.py: 300 epochs,
# DeiT augmentation and schedule, hard distillation from RegNetY-16GF) with the EfficientFormerV2
# backbone and head. Drop path as in the official model definitions: 0.0 here
# (EfficientFormerV2-S0 and EfficientFormerV2-S1); the EfficientFormerV2-S2 and
# EfficientFormerV2-L configs set 0.02 and 0.1.
_base_ = './efficientformer.py'
model = dict(
    backbone=dict(type='mmeff.EfficientFormerV2'),
    head=dict(type='mmeff.EfficientFormerV2ClsHead'))
