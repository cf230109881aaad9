# EfficientFormer-L1 on ImageNet-1k (79.2% top-1 in the paper).
_base_ = './_base_/efficientformer.py'
model = dict(backbone=dict(arch='l1'), head=dict(in_channels=448))
