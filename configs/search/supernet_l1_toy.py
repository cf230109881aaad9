# EfficientFormer supernet search on the toy ImageNet tree, sized for a few CPU minutes.
#   python tools/search.py configs/search/supernet_l1_toy.py --target-ratio 0.5 0.75 --compare
# The supernet trains through the classification pretraining module (mmeff.ImageClassifier,
# the configs/cls recipe, mmeff.engine.launch = tools/train.py); only sizes, data and the
# schedule length are shrunk. For a real search use the EfficientFormer-L1 shape (widths
# 48/96/224/448, depths 4/4/8/6), img_size 224 and data_root = 'data/imagenet'.
_base_ = [
    '../cls/_base_/imagenet_bs128_deit.py', '../cls/_base_/schedule_adamw_300e.py',
    '../cls/_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmeff', 'mmeff.search'], allow_failed_imports=False)

img_size = 64
num_classes = 5  # mmeff.datasets.toy_data.IMAGENET_CLASSES
data_root = 'data/toy/imagenet'
# written with mmeff.datasets.toy_data.make_imagenet when data_root does not exist
toy_imagenet = dict(num_train=250, num_val=100, size=(img_size, img_size), seed=0)

widths = (32, 48, 64, 96)
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientFormerSupernet', widths=widths, depths=(2, 2, 3, 3),
                  img_size=img_size, layer_scale_init=0.1, tau=1.0, out_indices=(3, )),
    head=dict(type='mmeff.EfficientFormerClsHead', in_channels=widths[-1],
              num_classes=num_classes, distillation=False))

# toy data: the recipe's augmentation stays; mixup/cutmix and erasing are off so that a few
# epochs learn the 5 classes
data_preprocessor = dict(random_erasing=None, mixup=None)
_loader = dict(batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False)
train_dataloader = dict(
    **_loader, dataset=dict(data_root=data_root, img_size=img_size))
val_dataloader = dict(
    **_loader, dataset=dict(data_root=data_root, img_size=img_size))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmeff.Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# architecture logits (Eqn. 8): own lr, no weight decay
optim_wrapper = dict(
    optimizer=dict(lr=2e-3),
    paramwise_cfg=dict(custom_keys={'arch_logits': dict(lr_mult=5.0, decay_mult=0.0)}))
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

# latency table measured on this machine at the stage resolutions of img_size
lut = dict(img_size=img_size, batch=4, backend='eager', step=16, min_width=16, runs=20,
           warmup=3, threads=1, copies=8)
# calibration: whole networks measured to fit measured = scale * LUT + offset;
# refinement: the slimmed network is measured and slimmed further while above target
search = dict(num_random=1, random_tolerance=0.05, seed=0, calibration_nets=6,
              refine_steps=4, latency_tolerance=0.1)
