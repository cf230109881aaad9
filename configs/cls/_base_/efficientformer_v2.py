# EfficientFormerV2 on ImageNet-1k: EfficientFormer's recipe (./efficientformer.py: 300 epochs,
# DeiT augmentation and schedule, hard distillation from RegNetY-16GF) with the V2 backbone and
# head. Drop path as in the official model definitions: 0.0 here (S0, S1); the S2 and L leaves
# set 0.02 and 0.1.
_base_ = './efficientformer.py'
model = dict(
    backbone=dict(type='mmeff.EfficientFormerV2'),
    head=dict(type='mmeff.EfficientFormerV2ClsHead'))
