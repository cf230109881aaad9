"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormerV2-S2."""
_base_ = './_base_/efficientformer_v2/maskrcnn.py'

model = dict(
    backbone=dict(arch='s2', drop_path_rate=0.02,
                  init_cfg=dict(checkpoint='checkpoints/efficientformerv2_s2.pth')),
    neck=dict(in_channels=[32, 64, 144, 288]))
