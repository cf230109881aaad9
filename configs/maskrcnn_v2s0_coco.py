"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormerV2-S0."""
_base_ = './_base_/efficientformer_v2/maskrcnn.py'

model = dict(
    backbone=dict(arch='s0', init_cfg=dict(checkpoint='checkpoints/efficientformerv2_s0.pth')),
    neck=dict(in_channels=[32, 48, 96, 176]))
