"""Mask R-CNN 1x on COCO with an ImageNet-pretrained EfficientFormer-L3 (EfficientFormer §5.2).

Recipe in ``_base_/maskrcnn_1x_coco_adamw.py``: AdamW lr 2e-4, weight decay 1e-4, 12 epochs,
LR steps at 8 and 11, 1333x800, 16 images per step (lr scaled for other totals).
Put the ImageNet checkpoint at ``checkpoints/efficientformer_l3.pth`` (pretrain it with
``tools/train.py configs/cls/efficientformer_l3_in1k.py`` or convert the official release with
``tools/convert_checkpoint.py``).
"""
_base_ = './_base_/maskrcnn_1x_coco_adamw.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmeff.EfficientFormer',
        arch='l3',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/efficientformer_l3.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
