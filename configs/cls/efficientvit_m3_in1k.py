# EfficientViT-M3 on ImageNet-1k (73.4% top-1 in the paper).
_base_ = './_base_/efficientvit.py'
model = dict(backbone=dict(arch='m3'), head=dict(in_channels=320))
