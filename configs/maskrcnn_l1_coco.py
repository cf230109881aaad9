"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormer-L1."""
_base_ = './_base_/efficientformer/maskrcnn.py'

model = dict(
    backbone=dict(arch='l1', init_cfg=dict(checkpoint='checkpoints/efficientformer_l1.pth')),
    neck=dict(in_channels=[48, 96, 224, 448]))
