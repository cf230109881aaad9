"""Semantic FPN on ADE20K, 512x512 crops, 40k iterations: the recipe of EfficientFormer and
EfficientFormerV2.

Inherits MMSeg's PoolFormer Semantic FPN 40k config (the paper follows PoolFormer's recipe):
RandomResize (2048, 512) x [0.5, 2] + 512x512 crop + flip + photometric distortion, tests at
short side 512 with both sides rounded to a multiple of 32 (``ResizeToMultiple``, what the
official code's ``AlignResize`` did), AdamW lr 2e-4 / weight decay 1e-4, poly decay power 0.9,
IoUMetric mIoU every 4k iterations. The only change besides the backbone: plain
``OptimWrapper`` instead of MMSeg's ``AmpOptimWrapper`` (the papers trained in fp32 and AMP
needs a GPU); pass ``--amp`` to tools/train.py for mixed precision.

Backbone: MMSeg's PoolFormer gives way to an mmeff backbone with the defaults of every family
(see configs/README.md); ``<family>/semfpn.py`` names it, a leaf its variant.

Batch: 4 images per GPU, 32 in total on the papers' 8 GPUs; ``auto_scale_lr`` scales the learning
rate linearly with the real total batch.
"""
_base_ = 'mmseg::poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py'

custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

# the backbone defaults every family shares: all four stages, nothing frozen, no drop path,
# BatchNorm in training mode, ImageNet weights (the leaf names the checkpoint)
model = dict(
    backbone=dict(_delete_=True, out_indices=(0, 1, 2, 3), drop_path_rate=0.0, frozen_stages=-1,
                  norm_eval=False, init_cfg=dict(type='Pretrained')))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)

train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(enable=True, base_batch_size=32)
