"""Semantic FPN on ADE20K with an ImageNet-pretrained EfficientFormerV2-S1."""
_base_ = './_base_/efficientformer_v2/semfpn.py'

model = dict(
    backbone=dict(arch='s1', init_cfg=dict(checkpoint='checkpoints/efficientformerv2_s1.pth')),
    neck=dict(in_channels=[32, 48, 120, 224]))
