"""EfficientViT in RetinaNet 1x on COCO (EfficientViT paper, Table 5).

As in the official downstream code: ``mmeff.EfficientViTFPN`` with one transposed-conv level
(stride 8) over the stride-16/32/64 maps and a stride-2 conv on the last backbone map for
stride 128, i.e. MMDet's P3-P7. AdamW lr 1e-4, weight decay 0.05 (none on the attention-bias
tables), 500-step warm-up, 12 epochs with LR steps at 8 and 11, 1333x800, 16 images per step
(lr scaled for other totals); BatchNorm statistics frozen as in the official backbone.
EfficientViT is the only RetinaNet user, so no recipe file sits between this one and MMDet's
config: the optimizer swap and the backbone defaults of ``../maskrcnn_1x_coco_adamw.py`` are here.
"""
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='mmeff.EfficientViT', out_indices=(0, 1, 2),
                  drop_path_rate=0.0, frozen_stages=-1, norm_eval=True,
                  img_size=448,  # 7x7 bias tables in every stage, as the downstream code
                  init_cfg=dict(type='Pretrained')),
    neck=dict(_delete_=True, type='mmeff.EfficientViTFPN', out_channels=256, start_level=0,
              num_outs=5, num_extra_trans_convs=1, add_extra_convs='on_input'))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'attention_bias': dict(decay_mult=0.0)}),
    clip_grad=None)

train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=True, base_batch_size=16)
