# EfficientFormer-L3 on ImageNet-1k (82.4% top-1 in the paper).
_base_ = './_base_/efficientformer.py'
model = dict(backbone=dict(arch='l3'), head=dict(in_channels=512))
