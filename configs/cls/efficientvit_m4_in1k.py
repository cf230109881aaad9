# EfficientViT-M4 on ImageNet-1k (74.3% top-1 in the paper).
_base_ = './_base_/efficientvit.py'
model = dict(backbone=dict(arch='m4'), head=dict(in_channels=384))
