"""Mask R-CNN 1x on COCO with AdamW: the recipe of EfficientFormer and EfficientFormerV2 on MMDet 3.

Inherits MMDet's own ResNet-50 config (model heads, COCO pipelines at 1333x800, 12 epochs with
the LR dropped at epochs 8 and 11 after a 500-iteration linear warm-up, CocoMetric bbox+segm)
and changes only what the papers change: the optimizer (AdamW, lr 2e-4, weight decay 1e-4,
no gradient clipping) and the backbone.

Backbone: MMDet's ResNet-50 gives way to an mmeff backbone with the defaults of every family
(see configs/README.md); ``<family>/maskrcnn.py`` names it, a leaf its variant.

Batch: 2 images per GPU, 16 in total on the papers' 8 GPUs. ``auto_scale_lr`` scales the
learning rate linearly when the total batch differs (fewer GPUs, other ``batch_size``).
"""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

# the backbone defaults every family shares: all four stages, nothing frozen, no drop path,
# BatchNorm in training mode, ImageNet weights (the leaf names the checkpoint)
model = dict(
    backbone=dict(_delete_=True, out_indices=(0, 1, 2, 3), drop_path_rate=0.0, frozen_stages=-1,
                  norm_eval=False, init_cfg=dict(type='Pretrained')))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4),
    clip_grad=None)

train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=True, base_batch_size=16)
