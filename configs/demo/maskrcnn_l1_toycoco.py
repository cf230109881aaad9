"""Demo: Mask R-CNN + EfficientFormer-L1 trained from scratch on the toy COCO set, on a CPU.

What ``tools/demo.py`` runs (``make demo``). The model is MMDet's Mask R-CNN R50-FPN with the
backbone swapped for EfficientFormer-L1 (random init: the demo downloads nothing and needs no
pretrained file) and the heads sized for the toy task: 224x224 images holding 1-4 shapes of
40-95 px in 3 classes, 2 images per step, ~200 steps (~10 minutes on 2 CPU cores).

Head changes versus the COCO recipe, and why:
- FPN / heads 128 channels wide, box head FC 256: 3 classes need far less capacity, and it
  keeps a step at ~3 s on 2 cores.
- Anchors of two scales per level (sizes 24-36 px at stride 4 up to 384-576 px): every object
  size of the toy set has an anchor with IoU >= 0.56 instead of relying on low-quality matches.
- 128 RPN samples, 300 proposals kept in training (100 at test), 64 sampled RoIs: images hold at
  most 4 objects, so COCO's 1000 proposals / 512 RoIs would be almost all background.
- AdamW lr 1e-3 with a 50-step warm-up and gradient clipping: a from-scratch model has to
  learn fast in 200 steps; clipping keeps the early steps of a random-init network stable.
"""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

data_root = 'data/toy/coco/'
classes = ('rectangle', 'ellipse', 'triangle')  # mmeff.datasets.toy_data.COCO_CLASSES
img_size = (224, 224)
num_classes = len(classes)
width = 128

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmeff.EfficientFormer',
        arch='l1',
        out_indices=(0, 1, 2, 3),
        init_cfg=None),
    neck=dict(in_channels=[48, 96, 224, 448], out_channels=width),
    rpn_head=dict(
        in_channels=width, feat_channels=width,
        anchor_generator=dict(scales=[6, 9])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_iters = 200
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=1e-5),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(by_epoch=False, window_size=10)
randomness = dict(seed=0)
