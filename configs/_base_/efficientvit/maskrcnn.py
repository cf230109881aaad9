"""EfficientViT in Mask R-CNN 1x on COCO: the official recipe.

EfficientViT's maps have strides 16/32/64; as in the official downstream code
(microsoft/Cream ``EfficientViT/downstream``), ``mmeff.EfficientViTFPN`` adds two
transposed-conv levels for strides 4 and 8, giving MMDet's P2-P6. On top of
``../maskrcnn_1x_coco_adamw.py`` (500-step warm-up, 12 epochs with LR steps at 8 and 11, 1333x800,
16 images per step): AdamW lr 1e-4, weight decay 0.05, none on the attention-bias tables;
BatchNorm statistics frozen as in the official backbone.
"""
_base_ = '../maskrcnn_1x_coco_adamw.py'

model = dict(
    backbone=dict(type='mmeff.EfficientViT', out_indices=(0, 1, 2), norm_eval=True,
                  img_size=448),  # 7x7 bias tables in every stage, as the downstream code
    neck=dict(_delete_=True, type='mmeff.EfficientViTFPN', out_channels=256, start_level=0,
              num_outs=5, num_extra_trans_convs=2))

optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'attention_bias': dict(decay_mult=0.0)}))
