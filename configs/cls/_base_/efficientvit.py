# EfficientViT on ImageNet-1k: 300 epochs without distillation (the paper distils only its
# 1000-epoch results), DeiT augmentation, no drop path (the model has none). The paper's
# optimiser: AdamW, weight decay 0.025, total batch 2048 (256 x 8 GPUs), lr 1e-3 x total_batch /
# 512 (the official script's scaling rule). A leaf sets the variant and its head width.
_base_ = ['./imagenet_bs128_deit.py', './schedule_adamw_300e.py', './default_runtime.py']
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientViT', out_indices=(-1, )),
    head=dict(type='mmeff.EfficientViTClsHead', num_classes=1000))
train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=384)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(weight_decay=0.025))
auto_scale_lr = dict(base_batch_size=512)
