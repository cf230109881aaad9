"""Semantic FPN on ADE20K (512x512, 40k iterations) with ImageNet-pretrained EfficientFormerV2-L.

Recipe in ``_base_/semfpn_40k_ade20k_adamw.py``: AdamW lr 2e-4, weight decay 1e-4 (the official
V2 segmentation configs keep V1's value), poly power 0.9, 32 images per step, test sizes rounded
to multiples of 32. As in the official V2 code, BatchNorm statistics stay frozen
(``norm_eval=True``) and stochastic depth is 0.1.
Put the ImageNet checkpoint at ``checkpoints/efficientformerv2_l.pth`` (pretrain it with
``tools/train.py configs/cls/efficientformer_v2_l_in1k.py`` or convert the official release with
``tools/convert_checkpoint.py``).
"""
_base_ = './_base_/semfpn_40k_ade20k_adamw.py'

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
