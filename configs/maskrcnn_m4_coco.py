"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientViT-M4."""
_base_ = './_base_/efficientvit/maskrcnn.py'

model = dict(
    backbone=dict(arch='m4', init_cfg=dict(checkpoint='checkpoints/efficientvit_m4.pth')),
    neck=dict(in_channels=[128, 256, 384]))
