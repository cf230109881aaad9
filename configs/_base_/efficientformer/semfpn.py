"""EfficientFormer in Semantic FPN on ADE20K (512x512, 40k iterations).

The recipe of ``../semfpn_40k_ade20k_adamw.py`` as it is: AdamW lr 2e-4, weight decay 1e-4, poly
power 0.9, 32 images per step (lr scaled for other totals), test sizes rounded to multiples of 32.
"""
_base_ = '../semfpn_40k_ade20k_adamw.py'

model = dict(backbone=dict(type='mmeff.EfficientFormer'))
