"""EfficientFormerV2 in Semantic FPN on ADE20K (512x512, 40k iterations).

The recipe of ``../semfpn_40k_ade20k_adamw.py``: AdamW lr 2e-4, weight decay 1e-4 (the official
EfficientFormerV2 segmentation configs keep EfficientFormer's value), poly power 0.9, 32 images
per step, test sizes rounded to multiples of 32. As in the official EfficientFormerV2 code,
BatchNorm statistics stay frozen (``norm_eval=True``). Stochastic depth as in the official model
definitions: 0.0 here (EfficientFormerV2-S0 and EfficientFormerV2-S1); the EfficientFormerV2-S2
and EfficientFormerV2-L configs set 0.02 and 0.1.
"""
_base_ = '../semfpn_40k_ade20k_adamw.py'

# As the official dense backbone: bias tables on its 512-pixel grids (16x16, 32x32 for the
# attention downsampling) and no output norms, so the released ADE20K checkpoints load exactly.
model = dict(backbone=dict(type='mmeff.EfficientFormerV2', norm_eval=True, img_size=512,
                           with_out_norms=False))
