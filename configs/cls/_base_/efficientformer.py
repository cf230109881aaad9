# EfficientFormer on ImageNet-1k, the recipe of the paper: 300 epochs, DeiT augmentation and
# AdamW schedule, hard distillation from RegNetY-16GF, the classifier around the backbone. A leaf
# sets the variant (backbone arch) and its head width. Drop path 0: the official models and
# script use none.
_base_ = [
    './imagenet_bs128_deit.py', './schedule_adamw_300e.py', './default_runtime.py',
    './distill_regnety_160.py'
]
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientFormer', out_indices=(3, ), with_out_norms=False,
                  drop_path_rate=0.0),
    head=dict(type='mmeff.EfficientFormerClsHead', num_classes=1000))
