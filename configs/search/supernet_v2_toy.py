# EfficientFormerV2 slimmable supernet trained by the sandwich rule on the toy ImageNet tree,
# sized for about a minute on 2 CPU cores (the V2 paper §2.2 / Alg. 1; configs/search/README.md).
#   python tools/make_toy_data.py --kinds imagenet          # writes data/toy/imagenet
#   python tools/train.py configs/search/supernet_v2_toy.py
# Each iteration trains the max, the min and two random subnets of the search space on one
# batch (gradients summed, one AdamW step) through the classification pretraining module
# (mmeff.SandwichClassifier = mmeff.ImageClassifier + the sandwich step; the configs/cls recipe;
# tools/train.py). Validation reports the max subnet. For a real search use e.g. arch='l' with
# width choices per stage, img_size 224 and data_root = 'data/imagenet'.
_base_ = ['_base_/toy_imagenet_6e.py']

img_size = 64  # as in the base (its loaders)
num_classes = 5
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

default_hooks = dict(logger=dict(interval=4))
