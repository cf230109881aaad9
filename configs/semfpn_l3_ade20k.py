"""Semantic FPN on ADE20K (512x512, 40k iterations) with ImageNet-pretrained EfficientFormer-L3.

Recipe in ``_base_/semfpn_40k_ade20k_adamw.py``: AdamW lr 2e-4, weight decay 1e-4, poly power 0.9,
32 images per step (lr scaled for other totals), test sizes rounded to multiples of 32.
Put the ImageNet checkpoint at ``checkpoints/efficientformer_l3.pth`` (pretrain it with
``tools/train.py configs/cls/efficientformer_l3_in1k.py`` or convert the official release with
``tools/convert_checkpoint.py``).
"""
_base_ = './_base_/semfpn_40k_ade20k_adamw.py'

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
