# EfficientFormerV2-S1 on ImageNet-1k (79.0% top-1 in the paper).
_base_ = './_base_/efficientformer_v2.py'
model = dict(backbone=dict(arch='s1'), head=dict(in_channels=224))
