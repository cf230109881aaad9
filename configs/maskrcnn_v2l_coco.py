"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormerV2-L.

Recipe in ``_base_/maskrcnn_1x_coco_adamw.py`` (AdamW lr 2e-4, 12 epochs, steps at 8 and 11,
1333x800, 16 images per step) with V2's weight decay 0.05. As in the official V2 detection code,
BatchNorm statistics stay frozen (``norm_eval=True``) and stochastic depth is 0.1.
Put the ImageNet checkpoint at ``checkpoints/efficientformerv2_l.pth`` (pretrain it with
``tools/train.py configs/cls/efficientformer_v2_l_in1k.py`` or convert the official release with
``tools/convert_checkpoint.py``).
"""
_base_ = './_base_/maskrcnn_1x_coco_adamw.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmeff.EfficientFormerV2',
        arch='l',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/efficientformerv2_l.pth')),
    neck=dict(in_channels=[40, 80, 192, 384]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
