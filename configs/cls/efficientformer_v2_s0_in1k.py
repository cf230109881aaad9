# EfficientFormerV2-S0 on ImageNet-1k (75.7% top-1 in the paper).
_base_ = './_base_/efficientformer_v2.py'
model = dict(backbone=dict(arch='s0'), head=dict(in_channels=176))
