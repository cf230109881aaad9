# EfficientViT-M5 on ImageNet-1k (77.1% top-1 in the paper).
_base_ = './_base_/efficientvit.py'
model = dict(backbone=dict(arch='m5'), head=dict(in_channels=384))
