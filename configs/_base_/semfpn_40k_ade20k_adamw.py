"""Semantic FPN on ADE20K, 512x512 crops, 40k iterations: the recipe of EfficientFormer V1/V2.

Inherits MMSeg's PoolFormer Semantic FPN 40k config (the paper follows PoolFormer's recipe):
RandomResize (2048, 512) x [0.5, 2] + 512x512 crop + flip + photometric distortion, tests at
short side 512 with both sides rounded to a multiple of 32 (``ResizeToMultiple``, what the
official code's ``AlignResize`` did), AdamW lr 2e-4 / weight decay 1e-4, poly decay power 0.9,
IoUMetric mIoU every 4k iterations. The only change besides the backbone: plain
``OptimWrapper`` instead of MMSeg's ``AmpOptimWrapper`` (the papers trained in fp32 and AMP
needs a GPU); pass ``--amp`` to tools/train.py for mixed precision.

Batch: 4 images per GPU, 32 in total on the papers' 8 GPUs; ``auto_scale_lr`` scales the learning
rate linearly with the real total batch.
"""
_base_ = 'mmseg::poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py'

custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=None)

train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(enable=True, base_batch_size=32)
