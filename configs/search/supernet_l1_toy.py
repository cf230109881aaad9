# EfficientFormer supernet search on the toy ImageNet tree, sized for a few CPU minutes.
#   python tools/search.py configs/search/supernet_l1_toy.py --target-ratio 0.5 0.75 --compare
# The supernet trains through the classification pretraining module (mmeff.ImageClassifier,
# the configs/cls recipe, mmeff.engine.launch = tools/train.py); only sizes, data and the
# schedule length are shrunk. For a real search use the EfficientFormer-L1 shape (widths
# 48/96/224/448, depths 4/4/8/6), img_size 224 and data_root = 'data/imagenet'.
_base_ = ['_base_/toy_imagenet_6e.py']

img_size = 64  # as in the base (its loaders)
num_classes = 5
# written with mmeff.datasets.toy_data.make_imagenet when data_root does not exist
toy_imagenet = dict(num_train=250, num_val=100, size=(img_size, img_size), seed=0)

widths = (32, 48, 64, 96)
model = dict(
    type='mmeff.ImageClassifier',
    backbone=dict(type='mmeff.EfficientFormerSupernet', widths=widths, depths=(2, 2, 3, 3),
                  img_size=img_size, layer_scale_init=0.1, tau=1.0, out_indices=(3, )),
    head=dict(type='mmeff.EfficientFormerClsHead', in_channels=widths[-1],
              num_classes=num_classes, distillation=False))

# architecture logits (Eqn. 8): own lr, no weight decay
optim_wrapper = dict(
    optimizer=dict(lr=2e-3),
    paramwise_cfg=dict(custom_keys={'arch_logits': dict(lr_mult=5.0, decay_mult=0.0)}))
# latency table measured on this machine at the stage resolutions of img_size
lut = dict(img_size=img_size, batch=4, backend='eager', step=16, min_width=16, runs=20,
           warmup=3, threads=1, copies=8)
# calibration: whole networks measured to fit measured = scale * LUT + offset;
# refinement: the slimmed network is measured and slimmed further while above target
search = dict(num_random=1, random_tolerance=0.05, seed=0, calibration_nets=6,
              refine_steps=4, latency_tolerance=0.1)
