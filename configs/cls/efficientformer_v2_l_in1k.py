# EfficientFormerV2-L on ImageNet-1k (83.3% top-1 in the paper);
# drop path 0.1 as in the official model definition.
_base_ = './_base_/efficientformer_v2.py'
model = dict(backbone=dict(arch='l', drop_path_rate=0.1), head=dict(in_channels=384))
