"""EfficientFormer in Semantic FPN on ADE20K (512x512, 40k iterations).

The recipe of ``../semfpn_40k_ade20k_adamw.py`` as it is: AdamW lr 2e-4, weight decay 1e-4, poly
power 0.9, 32 images per step (lr scaled for other totals), test sizes rounded to multiples of 32.
"""
_base_ = '../semfpn_40k_ade20k_adamw.py'

# img_size=512: the bias tables on the 16x16 grid of the official segmentation backbone, so the
# released ADE20K checkpoints load exactly (an ImageNet 7x7 table is resized once, on load)
model = dict(backbone=dict(type='mmeff.EfficientFormer', img_size=512))
