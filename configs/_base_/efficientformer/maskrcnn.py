"""EfficientFormer in Mask R-CNN 1x on COCO (EfficientFormer §5.2).

The recipe of ``../maskrcnn_1x_coco_adamw.py`` as it is: AdamW lr 2e-4, weight decay 1e-4,
12 epochs, LR steps at 8 and 11, 1333x800, 16 images per step (lr scaled for other totals).
"""
_base_ = '../maskrcnn_1x_coco_adamw.py'

# img_size=800: the bias tables on the 25x25 grid of the official detection backbone, so the
# released COCO checkpoints load exactly (an ImageNet 7x7 table is resized once, on load)
model = dict(backbone=dict(type='mmeff.EfficientFormer', img_size=800))
