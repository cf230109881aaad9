# ImageNet-1k (class-folder layout under data/imagenet), DeiT augmentation, 128 images per GPU.
# The images leave the dataset as uint8 tensors from timm's create_transform (random resized crop
# 224 bicubic, flip, RandAugment rand-m9-mstd0.5-inc1 / eval: resize 256 + centre crop 224);
# the data preprocessor normalises them on the device and applies timm's RandomErasing (0.25,
# pixel) and Mixup (mixup 0.8, cutmix 1.0, label smoothing 0.1), as timm's PrefetchLoader does.
data_root = 'data/imagenet'
img_size = 224
num_classes = 1000

data_preprocessor = dict(
    type='mmeff.ClsDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    random_erasing=dict(probability=0.25, mode='pixel', max_count=1),
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch',
               label_smoothing=0.1, num_classes=num_classes))

train_dataloader = dict(
    batch_size=128,  # x 8 GPUs = 1024, the papers' batch
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # mixup needs even batches
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='mmeff.ImageNet', data_root=data_root, split='train', img_size=img_size))
val_dataloader = dict(
    batch_size=192,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='mmeff.ImageNet', data_root=data_root, split='val', img_size=img_size))
val_evaluator = dict(type='mmeff.Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
