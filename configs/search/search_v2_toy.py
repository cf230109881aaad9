# EfficientFormerV2's joint size/speed search on the toy ImageNet tree, sized for CPU minutes:
# the supernet of ./supernet_v2_toy.py (sandwich rule) + the latency table and search settings.
#   python tools/search.py configs/search/search_v2_toy.py --target-mes 45 --compare
# (the family follows the backbone type, mmeff.EfficientFormerV2Supernet; configs/search/
# README.md, "EfficientFormerV2"). For a real search use the supernet of an S2 / L arch at
# img_size 224 on data/imagenet and a table measured on the target device (--lut phone.csv).
_base_ = ['./supernet_v2_toy.py']

# a larger toy tree than the supernet config's (written by the search when missing): 800 val
# images, 75% of them (600) held out of the search to report the comparison.
data_root = 'data/toy/imagenet_search800'
toy_imagenet = dict(num_train=285, num_val=800, size=({{_base_.img_size}}, {{_base_.img_size}}),
                    seed=0)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

# latency table of the space's V2 ops, measured on this machine at the stage resolutions of
# img_size (one thread: the process CPU time, fastest of `runs`; see mmeff/search/lut.py)
lut = dict(img_size={{_base_.img_size}}, batch=1, backend='eager', runs=20, warmup=3,
           threads=1, copies=4)
# calibration_nets: whole networks (max, min, random) measured to fit the table;
# held_out: the fraction of the val split the search never sees (the comparison's figures);
# bn_calibration_images: train images (eval transform) on which every scored subnet's
# BatchNorm statistics are re-estimated first (mmeff/search/bn_calibration.py);
# --compare: one random subnet per seed within random_tolerance of the searched MES and
# parameter count; train_from_scratch: train the searched and the random nets (their written
# configs, randomness.seed = seed) and report top-1 on the held-out images
search = dict(calibration_nets=5, seed=0, held_out=0.75, bn_calibration_images=64,
              seeds=(0, 1, 2), random_tolerance=0.05, random_tries=20000,
              train_from_scratch=True)
