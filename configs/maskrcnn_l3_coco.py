"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormer-L3."""
_base_ = './_base_/efficientformer/maskrcnn.py'

model = dict(
    backbone=dict(arch='l3', init_cfg=dict(checkpoint='checkpoints/efficientformer_l3.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
