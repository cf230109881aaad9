# The toy ImageNet tree and the short schedule that the search configs' supernets train with:
# the configs/cls recipe (DeiT data pipeline, AdamW, runtime) with only sizes, data and schedule
# length shrunk. A config that changes img_size or data_root sets the loaders' values too.
_base_ = [
    '../../cls/_base_/imagenet_bs128_deit.py', '../../cls/_base_/schedule_adamw_300e.py',
    '../../cls/_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmeff', 'mmeff.search'], allow_failed_imports=False)

img_size = 64
num_classes = 5  # mmeff.datasets.toy_data.IMAGENET_CLASSES
data_root = 'data/toy/imagenet'

# toy data: the recipe's augmentation stays; mixup/cutmix and erasing are off so that a few
# epochs learn the 5 classes
data_preprocessor = dict(random_erasing=None, mixup=None)
_loader = dict(batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False)
train_dataloader = dict(**_loader, dataset=dict(data_root=data_root, img_size=img_size))
val_dataloader = dict(**_loader, dataset=dict(data_root=data_root, img_size=img_size))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmeff.Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=2e-3))
auto_scale_lr = dict(enable=False)
max_epochs = 6
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs,
         convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs, save_best=None),
                     logger=dict(interval=8))
log_level = 'WARNING'
