"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormer-L7."""
_base_ = './_base_/efficientformer/maskrcnn.py'

model = dict(
    backbone=dict(arch='l7', init_cfg=dict(checkpoint='checkpoints/efficientformer_l7.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
