# EfficientViT-M1 on ImageNet-1k (68.4% top-1 in the paper).
_base_ = './_base_/efficientvit.py'
model = dict(backbone=dict(arch='m1'), head=dict(in_channels=192))
