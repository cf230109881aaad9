"""Semantic FPN on ADE20K with an ImageNet-pretrained EfficientViT-M4."""
_base_ = './_base_/efficientvit/semfpn.py'

model = dict(
    backbone=dict(arch='m4', init_cfg=dict(checkpoint='checkpoints/efficientvit_m4.pth')),
    neck=dict(in_channels=[128, 256, 384]))
