# EfficientFormerV2-S0 on ImageNet-1k: 300 epochs, DeiT recipe, hard distillation from
# RegNetY-16GF (75.7% top-1 in the paper). Drop path 0.0 as in the official model definition.
_base_ = [
    './_base_/imagenet_bs128_deit.py', './_base_/schedule_adamw_300e.py',
    './_base_/default_runtime.py', './_base_/distill_regnety_160.py'
]
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientFormerV2', arch='s0', out_indices=(3, ),
                  with_out_norms=False, drop_path_rate=0.0),
    head=dict(type='mmeff.EfficientFormerV2ClsHead', in_channels=176, num_classes=1000))
