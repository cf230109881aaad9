"""Mask R-CNN 1x on COCO with AdamW: the recipe of EfficientFormer (V1 and V2) on MMDet 3.

Inherits MMDet's own ResNet-50 config (model heads, COCO pipelines at 1333x800, 12 epochs with
the LR dropped at epochs 8 and 11 after a 500-iteration linear warm-up, CocoMetric bbox+segm)
and changes only what the papers change: the optimizer (AdamW, lr 2e-4, weight decay 1e-4,
no gradient clipping) and, in each leaf config, the backbone and the FPN input widths.

Batch: 2 images per GPU, 16 in total on the papers' 8 GPUs. ``auto_scale_lr`` scales the
learning rate linearly when the total batch differs (fewer GPUs, other ``batch_size``).
"""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4),
    clip_grad=None)

train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=True, base_batch_size=16)
