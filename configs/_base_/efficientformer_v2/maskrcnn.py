"""EfficientFormerV2 in Mask R-CNN 1x on COCO.

The recipe of ``../maskrcnn_1x_coco_adamw.py`` (AdamW lr 2e-4, 12 epochs, steps at 8 and 11,
1333x800, 16 images per step) with EfficientFormerV2's weight decay 0.05. As in the official
EfficientFormerV2 detection code, BatchNorm statistics stay frozen (``norm_eval=True``).
Stochastic depth as in the official model definitions: 0.0 here (EfficientFormerV2-S0 and
EfficientFormerV2-S1); the EfficientFormerV2-S2 and EfficientFormerV2-L configs set 0.02 and 0.1.
"""
_base_ = '../maskrcnn_1x_coco_adamw.py'

# As the official dense backbone: bias tables on its 800-pixel grids (25x25, 50x50 for the
# attention downsampling) and no output norms, so the released COCO checkpoints load exactly.
model = dict(backbone=dict(type='mmeff.EfficientFormerV2', norm_eval=True, img_size=800,
                           with_out_norms=False))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
