# EfficientViT-M2 on ImageNet-1k (70.8% top-1 in the paper).
_base_ = './_base_/efficientvit.py'
model = dict(backbone=dict(arch='m2'), head=dict(in_channels=224))
