# Hard distillation from RegNetY-16GF (timm 'regnety_160', 82.9% top-1), the teacher of the
# EfficientFormer and EfficientFormerV2 papers. mmeff never downloads: the checkpoint must be a
# local file, e.g. DeiT's https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth saved
# under checkpoints/.
# Override with --cfg-options model.teacher.checkpoint=/path/to/regnety_160.pth, or train without
# distillation with --cfg-options model.teacher=None.
model = dict(
    teacher=dict(name='regnety_160', checkpoint='checkpoints/regnety_160-a5fe301d.pth'),
    distillation_alpha=0.5)
