# EfficientFormerV2-S2 on ImageNet-1k (81.6% top-1 in the paper);
# drop path 0.02 as in the official model definition.
_base_ = './_base_/efficientformer_v2.py'
model = dict(backbone=dict(arch='s2', drop_path_rate=0.02), head=dict(in_channels=288))
