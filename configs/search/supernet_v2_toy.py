# EfficientFormerV2 slimmable supernet trained by the sandwich rule on the toy ImageNet tree,
# sized for about a minute on 2 CPU cores (the V2 paper §2.2 / Alg. 1; configs/search/README.md).
#   python tools/make_toy_data.py --kinds imagenet          # writes data/toy/imagenet
#   python tools/train.py configs/search/supernet_v2_toy.py
# Each iteration trains the max, the min and two random subnets of the search space on one
# batch (gradients summed, one AdamW step) through the classification pretraining module
# (mmeff.SandwichClassifier = mmeff.ImageClassifier + the sandwich step; the configs/cls recipe;
# tools/train.py). Validation reports the max subnet. For a real search use e.g. arch='l' with
# width choices per stage, img_size 224 and data_root = 'data/imagenet'.
_base_ = [
    '../cls/_base_/imagenet_bs128_deit.py', '../cls/_base_/schedule_adamw_300e.py',
    '../cls/_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmeff', 'mmeff.search'], allow_failed_imports=False)

img_size = 64
num_classes = 5  # mmeff.datasets.toy_data.IMAGENET_CLASSES
data_root = 'data/toy/imagenet'
# the tree tools/make_toy_data.py --kinds imagenet writes (its defaults)
toy_imagenet = dict(num_train=250, num_val=50, size=(img_size, img_size), seed=0)

# the largest subnet: an EfficientFormerV2 arch dict (any value a subnet takes is <= it)
max_arch = dict(widths=(16, 32, 48, 64), depths=(2, 2, 3, 3), mlp_ratios=4, num_attn=1)
width_choices = ((8, 16), (16, 32), (32, 48), (48, 64))
model = dict(
    type='mmeff.SandwichClassifier',
    num_random=2,                # max + min + 2 random subnets per iteration
    inplace_distillation=True,   # min / random subnets learn the max subnet's soft labels
    seed=0,
    backbone=dict(type='mmeff.EfficientFormerV2Supernet', arch=max_arch,
                  width_choices=width_choices, ratio_choices=(2, 3, 4), min_depths=(1, 1, 2, 2),
                  img_size=img_size, drop_path_rate=0.1, layer_scale_init=1e-5,
                  out_indices=(3, ), with_out_norms=False),
    head=dict(type='mmeff.EfficientFormerV2SupernetHead', width_choices=width_choices[3],
              num_classes=num_classes, distillation=False))

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
                     logger=dict(interval=4))
log_level = 'WARNING'
