"""EfficientViT in Semantic FPN on ADE20K (512x512, 40k iterations).

EfficientFormer's recipe (``../semfpn_40k_ade20k_adamw.py``: AdamW lr 2e-4, weight decay 1e-4,
poly power 0.9, 32 images per step, test sizes rounded to multiples of 32). EfficientViT's maps
have strides 16/32/64: ``mmeff.EfficientViTFPN`` adds transposed-conv levels for strides 4 and 8
(as the official detection code did), and the FPN head fuses all five levels (4/8/16/32/64), so
every parameter gets a gradient (no unused /64 branch under DDP). No weight decay on the
attention-bias tables; BatchNorm statistics frozen as in the official backbone.
"""
_base_ = '../semfpn_40k_ade20k_adamw.py'

model = dict(
    backbone=dict(type='mmeff.EfficientViT', out_indices=(0, 1, 2), norm_eval=True),
    neck=dict(_delete_=True, type='mmeff.EfficientViTFPN', out_channels=256, start_level=0,
              num_outs=5, num_extra_trans_convs=2),
    decode_head=dict(
        in_channels=[256, 256, 256, 256, 256],
        in_index=[0, 1, 2, 3, 4],
        feature_strides=[4, 8, 16, 32, 64]))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'attention_bias': dict(decay_mult=0.0)}))
