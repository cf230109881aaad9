# EfficientFormer supernet on toy ImageNet-style data, sized to search in a few CPU minutes.
# Use: python tools/search.py configs/search/supernet_l1_toy.py --target-latency MS
# (the L1-like shape: widths 48/96/224/448 and depths 4/4/8/6 at 224 for a real search).
custom_imports = dict(imports=['mmeff.search', 'mmeff.models'], allow_failed_imports=False)

img_size = 32
num_classes = 8
widths = (32, 48, 64, 96)
model = dict(
    type='MobileClassifierNet',
    backbone=dict(type='EfficientFormerSupernet', widths=widths, depths=(2, 2, 3, 3),
                  img_size=img_size, layer_scale_init=0.1, tau=1.0, out_indices=(3, )),
    head=dict(type='EfficientFormerClsHead', in_channels=widths[-1], num_classes=num_classes,
              distillation=False))

# in-memory toy data (mmeff.search.toy_data); the last `val_images` are held out
toy_data = dict(num_classes=num_classes, per_class=60, img_size=img_size, noise=0.8, seed=0)
val_images = 160

supernet_train = dict(epochs=2, batch_size=32, lr=2e-3, arch_lr=1e-2)
# derived and random networks are trained from scratch with this budget (Table 5 comparison)
final_train = dict(epochs=2, batch_size=32, lr=2e-3)
final_layer_scale_init = 0.1

# latency table on this machine: the stage resolutions of img_size, widths up to `widths`
lut = dict(img_size=img_size, batch=8, backend='eager', step=16, min_width=16, runs=10,
           warmup=3, threads=1, copies=8)
search = dict(num_random=1, random_tolerance=0.03, seed=0)
