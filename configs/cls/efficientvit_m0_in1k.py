# EfficientViT-M0 on ImageNet-1k (63.2% top-1 in the paper).
_base_ = './_base_/efficientvit.py'
model = dict(backbone=dict(arch='m0'), head=dict(in_channels=192))
