# EfficientFormer-L3 on ImageNet-1k: 300 epochs, DeiT recipe, hard distillation from
# RegNetY-16GF (82.4% top-1 in the paper). Drop path 0: the official model and script use none.
_base_ = [
    './_base_/imagenet_bs128_deit.py', './_base_/schedule_adamw_300e.py',
    './_base_/default_runtime.py', './_base_/distill_regnety_160.py'
]
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientFormer', arch='l3', out_indices=(3, ),
                  with_out_norms=False, drop_path_rate=0.0),
    head=dict(type='mmeff.EfficientFormerClsHead', in_channels=512, num_classes=1000))
