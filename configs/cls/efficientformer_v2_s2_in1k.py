# EfficientFormerV2-S2 on ImageNet-1k: 300 epochs, DeiT recipe, hard distillation from
# RegNetY-16GF (81.6% top-1 in the paper). Drop path 0.02 as in the official model definition.
_base_ = [
    './_base_/imagenet_bs128_deit.py', './_base_/schedule_adamw_300e.py',
    './_base_/default_runtime.py', './_base_/distill_regnety_160.py'
]
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientFormerV2', arch='s2', out_indices=(3, ),
                  with_out_norms=False, drop_path_rate=0.02),
    head=dict(type='mmeff.EfficientFormerV2ClsHead', in_channels=288, num_classes=1000))
