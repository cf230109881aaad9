"""Toy data and "toy overlay" configs for running the real configs of ``configs/`` quickly.

A toy overlay is a small config file whose ``_base_`` is the real config. It replaces only the
data (toy COCO / ADE sets, tiny images, one image per split) and, for detectors, the number of
classes and how many proposals / RoIs are sampled. The architecture, optimizer, scheduler and
hooks all come from the real config, so what runs is what a user runs, just smaller. Schedule
length and ``init_cfg=None`` come from each test as cfg-options, as a user would pass them.
"""
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / 'configs'

DET_OVERLAY = '''
_base_ = {base!r}
data_root = {root!r}
_classes = {classes!r}
_size = ({size}, {size})
_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=_size, keep_ratio=True),
    dict(type='PackDetInputs'),
]
_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle={shuffle}),
    dataset=dict(data_root=data_root, metainfo=dict(classes=_classes),
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), indices={num_train},
                 pipeline=_train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=_classes),
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), indices={num_val},
                 pipeline=_test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
'''

SEG_OVERLAY = '''
_base_ = {base!r}
data_root = {root!r}
_size = ({size}, {size})
_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2 * {size}, {size}), ratio_range=(1.0, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=_size, cat_max_ratio=0.75),
    dict(type='PackSegInputs'),
]
_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2 * {size}, {size}), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
model = dict(data_preprocessor=dict(size=_size))
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle={shuffle}),
    dataset=dict(_delete_=True, type='ADE20KDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training'),
                 indices={num_train}, pipeline=_train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, indices={num_val}, pipeline=_test_pipeline))
test_dataloader = val_dataloader
'''


def _detector_overrides(model: dict, num: int) -> str:
    """``model = dict(...)`` text for a toy run of a detector.

    Sets every head's num_classes to the toy set's (CocoMetric maps labels to the dataset's
    category ids) and samples fewer proposals / RoIs and keeps fewer detections: a random model
    at 128 px otherwise sends hundreds of RoIs through a 256-channel mask head, which is most of
    the time of a smoke run. ``score_thr=0``: an untrained RetinaNet scores everything near its
    focal-loss prior (0.01), below the usual 0.05, and an empty result has no mAP to check.
    The architecture itself is untouched.
    """
    if 'roi_head' in model:  # two-stage (Mask R-CNN)
        heads = [f'bbox_head=dict(num_classes={num})']
        if model.roi_head.get('mask_head'):
            heads.append(f'mask_head=dict(num_classes={num})')
        return (f"model = dict(roi_head=dict({', '.join(heads)}),\n"
                '    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=64),\n'
                '                   rcnn=dict(sampler=dict(num=16))),\n'
                '    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=32),\n'
                '                  rcnn=dict(score_thr=0.0, max_per_img=5)))\n')
    if 'bbox_head' in model:  # one-stage (RetinaNet)
        return (f'model = dict(bbox_head=dict(num_classes={num}),\n'
                '    test_cfg=dict(nms_pre=100, score_thr=0.0, max_per_img=5))\n')
    raise ValueError(f'unknown detector layout: {sorted(model)}')


def write_toy_overlay(config: Path, out_dir: Path, data_root: Path, size: int = 128,
                      batch: int = 1, num_train: int = 1, num_val: int = 1,
                      shuffle: bool = False) -> Path:
    """Write ``out_dir/toy_<name>.py`` that inherits ``config`` and swaps in toy data."""
    from mmengine.config import Config

    from mmeff.datasets import COCO_CLASSES
    cfg = Config.fromfile(str(config))
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f'{config}: default_scope {scope!r} is neither mmdet nor mmseg')
    template = DET_OVERLAY if scope == 'mmdet' else SEG_OVERLAY
    text = template.format(base=str(Path(config).resolve()), root=str(data_root) + '/',
                           size=size, batch=batch, num_train=num_train, num_val=num_val,
                           shuffle=shuffle, classes=tuple(COCO_CLASSES))
    if scope == 'mmdet':
        text += _detector_overrides(cfg.model, num=len(COCO_CLASSES))
    out = Path(out_dir) / f'toy_{Path(config).stem}.py'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """Run these small models on one thread: at 128 px there is little to parallelise, and on a
    shared machine multi-threaded OpenMP steps stall whenever another process holds a core."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='session')
def write_overlay():
    """The :func:`write_toy_overlay` function (fixtures are how conftest helpers are shared)."""
    return write_toy_overlay


@pytest.fixture(scope='session')
def train_api():
    """``tools/train.py CONFIG --work-dir W --cfg-options k=v ...`` in process (through
    ``mmeff.engine.launch.train``, the function the script calls); returns the finished Runner."""
    from mmeff.engine import launch

    def run(config: Path, work_dir: Path, cfg_options: Optional[dict] = None, *extra: str):
        argv = [str(config), '--work-dir', str(work_dir), *extra]
        if cfg_options:
            argv += ['--cfg-options'] + [f'{k}={v}' for k, v in cfg_options.items()]
        return launch.train(argv)
    return run


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory) -> Path:
    from mmeff.datasets import make_coco
    root = tmp_path_factory.mktemp('toy') / 'coco'
    make_coco(root, num_train=4, num_val=2, size=(128, 128), seed=0)
    return root


@pytest.fixture(scope='session')
def toy_ade(tmp_path_factory) -> Path:
    from mmeff.datasets import make_ade
    root = tmp_path_factory.mktemp('toy') / 'ade'
    make_ade(root, num_train=4, num_val=2, size=(128, 128), seed=0)
    return root


# ------------------------------------------------------- known predictions on the toy sets
def ade_label_counts(seg_map: Path, num_classes: int = 150):
    """Pixels per class in a toy ADE annotation, read from the PNG itself as the dataset's
    ``reduce_zero_label=True`` defines it (0 "other" is ignored, label v is class v - 1)."""
    import numpy as np
    from PIL import Image
    labels = np.asarray(Image.open(seg_map), dtype=np.int64).ravel()
    return np.bincount(labels[labels > 0] - 1, minlength=num_classes)[:num_classes]


def constant_class_metrics(counts) -> tuple:
    """(class, IoUMetric's aAcc / mIoU / mAcc in %) of predicting the most frequent class c at
    every pixel: IoU of c is n_c / N, every other class present scores 0, absent classes are not
    averaged; accuracy of c is 1, of the others 0."""
    c, total, present = int(counts.argmax()), int(counts.sum()), int((counts > 0).sum())
    assert present >= 2, 'the known prediction needs ground truth with two classes or more'
    return c, dict(aAcc=100 * counts[c] / total, mIoU=100 * counts[c] / total / present,
                   mAcc=100 / present)


@pytest.fixture(scope='session')
def known_predictions():
    """The helpers above (fixtures are how conftest helpers are shared)."""
    return dict(ade_label_counts=ade_label_counts, constant_class_metrics=constant_class_metrics)
