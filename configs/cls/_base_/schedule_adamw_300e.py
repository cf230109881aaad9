# The EfficientFormer/DeiT schedule: AdamW, lr 1e-3 x total_batch / 1024 (auto_scale_lr),
# weight decay 0.05 except on norms, biases, layer scales (gamma) and attention-bias tables
# (table), 5 linear warm-up epochs, cosine to 1e-5 over 300 epochs.
optim_wrapper = dict(
    type='OptimWrapper',  # tools/train.py --amp switches to AmpOptimWrapper
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,  # every 1-D parameter (norm weights of any class, gamma, biases)
        custom_keys={
            '.gamma': dict(decay_mult=0.0),
            '.table': dict(decay_mult=0.0),
        }))

warmup_epochs = 5
max_epochs = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# lr above is for 1024 images per step; the runner rescales it to the real total batch
auto_scale_lr = dict(base_batch_size=1024, enable=True)
