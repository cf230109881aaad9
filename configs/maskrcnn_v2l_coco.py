"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormerV2-L."""
_base_ = './_base_/efficientformer_v2/maskrcnn.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.1,
                  init_cfg=dict(checkpoint='checkpoints/efficientformerv2_l.pth')),
    neck=dict(in_channels=[40, 80, 192, 384]))
