# EfficientFormer-L7 on ImageNet-1k (83.3% top-1 in the paper).
_base_ = './_base_/efficientformer.py'
model = dict(backbone=dict(arch='l7'), head=dict(in_channels=768))
