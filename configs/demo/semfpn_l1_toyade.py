"""Learning check: Semantic FPN + EfficientFormer-L1 from scratch on the toy ADE-style set (CPU).

Inherits the real ADE20K config (``semfpn_l1_ade20k.py``) and changes only what a 2-core CPU and
a 5-class toy set need: random init (no pretrained file), 256x256 toy images with 256x256
crops, 5 classes, batch 4, a short schedule with a higher learning rate (AdamW 1e-3, 30-step
warm-up, then the recipe's poly decay). ``PhotoMetricDistortion`` is left out: its hue jitter
(+-36 degrees) would blur the colour cue that tells the toy classes apart. Used by
``tools/check_semfpn_learning.py``.
"""
_base_ = '../semfpn_l1_ade20k.py'

data_root = 'data/toy/ade/ADEChallengeData2016'
classes = ('wall', 'building', 'sky', 'floor', 'tree')  # mmeff.datasets.toy_data.ADE_CLASSES
crop_size = (256, 256)
max_iters = 400

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=len(classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 256), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='ADE20KDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.01))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=30, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=100)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
    visualization=dict(draw=False))
randomness = dict(seed=0)
