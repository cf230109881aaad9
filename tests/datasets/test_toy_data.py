"""Toy datasets: readable by the real MMDet / MMSeg / torchvision loaders, valid, reproducible."""
import colorsys
import filecmp
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from PIL import Image

from mmeff.datasets.toy_data import (ADE_CLASSES, ADE_LABELS, COCO_CLASSES, IMAGENET_CLASSES,
                                     TOY_SUBDIRS, make_ade, make_coco, make_imagenet,
                                     make_toy_data)


def _vividness(img: np.ndarray) -> np.ndarray:
    """Max - min over RGB: high on the saturated shapes, low on the greyish backgrounds."""
    return img.max(-1).astype(np.float32) - img.min(-1).astype(np.float32)


# ---------------------------------------------------------------------------------------- COCO
@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('toy') / 'coco'
    make_coco(root, num_train=6, num_val=4, size=(96, 128), seed=3)
    return root


def _coco_dataset(root: Path, split: str):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
                dict(type='PackDetInputs')]
    with DefaultScope.overwrite_default_scope('mmdet'):
        return CocoDataset(data_root=str(root), ann_file=f'annotations/instances_{split}2017.json',
                           data_prefix=dict(img=f'{split}2017/'), pipeline=pipeline,
                           metainfo=dict(classes=COCO_CLASSES), test_mode=False,
                           filter_cfg=dict(filter_empty_gt=True, min_size=32))


def test_coco_loads_through_mmdet_with_polygon_masks(coco_root):
    raw = json.loads((coco_root / 'annotations/instances_train2017.json').read_text())
    assert [c['name'] for c in raw['categories']] == list(COCO_CLASSES)
    dataset = _coco_dataset(coco_root, 'train')
    assert len(dataset) == 6
    per_image = {}
    for ann in raw['annotations']:
        per_image.setdefault(ann['image_id'], []).append(ann)
    labels_seen = set()
    for idx in range(len(dataset)):
        sample = dataset[idx]
        info = dataset.get_data_info(idx)
        anns = per_image[info['img_id']]
        assert tuple(sample['inputs'].shape) == (3, 96, 128)
        gt = sample['data_samples'].gt_instances
        assert 1 <= len(gt) <= 4 and len(gt) == len(anns)
        labels_seen.update(gt.labels.tolist())
        masks = gt.masks.to_ndarray().astype(bool)  # polygons rasterised by pycocotools
        img = sample['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
        vivid = _vividness(img)
        background = ~masks.any(0)
        for mask, box, ann in zip(masks, gt.bboxes.tensor.numpy(), anns):
            assert mask.sum() == pytest.approx(ann['area'], rel=0.15)
            ys, xs = np.nonzero(mask)  # the mask lies in its box
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
            assert ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
            # the polygon covers the painted shape: vivid inside, greyish outside
            assert np.median(vivid[mask]) > np.median(vivid[background]) + 40
    assert labels_seen <= {0, 1, 2} and len(labels_seen) >= 2


def test_coco_annotations_evaluate_to_perfect_map(coco_root):
    """Ground truth fed back as predictions scores mAP 1.0 with MMDet's real CocoMetric."""
    from mmdet.evaluation import CocoMetric
    dataset = _coco_dataset(coco_root, 'val')
    metric = CocoMetric(ann_file=str(coco_root / 'annotations/instances_val2017.json'),
                        metric=['bbox', 'segm'])
    metric.dataset_meta = dataset.metainfo
    for idx in range(len(dataset)):
        sample = dataset[idx]
        gt = sample['data_samples'].gt_instances
        pred = dict(bboxes=gt.bboxes.tensor, labels=gt.labels,
                    scores=torch.ones(len(gt)), masks=torch.from_numpy(gt.masks.to_ndarray()))
        metric.process({}, [dict(img_id=sample['data_samples'].img_id,
                                 ori_shape=sample['data_samples'].ori_shape, pred_instances=pred)])
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------- ADE
@pytest.fixture(scope='module')
def ade_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('toy') / 'ade' / 'ADEChallengeData2016'
    make_ade(root, num_train=5, num_val=2, size=(64, 80), seed=1)
    return root


def _ade_dataset(root: Path, metainfo=None):
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    # LoadAnnotations takes reduce_zero_label from the dataset (ADE20KDataset: True)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    with DefaultScope.overwrite_default_scope('mmseg'):
        return ADE20KDataset(data_root=str(root), metainfo=metainfo,
                             data_prefix=dict(img_path='images/training',
                                              seg_map_path='annotations/training'),
                             pipeline=pipeline)


@pytest.mark.parametrize('subset', [False, True], ids=['150-classes', 'toy-5-classes'])
def test_ade_labels_reduce_like_ade20k(ade_root, subset):
    dataset = _ade_dataset(ade_root, dict(classes=ADE_CLASSES) if subset else None)
    assert len(dataset) == 5
    assert len(dataset.metainfo['classes']) == (len(ADE_CLASSES) if subset else 150)
    values_seen = set()
    for idx in range(len(dataset)):
        sample = dataset[idx]
        raw = np.array(Image.open(dataset.get_data_info(idx)['seg_map_path']))
        assert raw.dtype == np.uint8 and set(np.unique(raw)) <= set(range(0, 6))
        values_seen.update(np.unique(raw).tolist())
        gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
        expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
        np.testing.assert_array_equal(gt, expected)
        assert tuple(sample['inputs'].shape) == (3, 64, 80)
    assert {1, 2, 3, 4, 5} <= values_seen  # background and every shape class occur


def test_ade_classes_are_told_apart_by_colour(ade_root):
    """Each shape class is painted in its own hue: a segmentor can learn it from colour."""
    hues = {v: [] for v in range(2, 6)}
    for png in sorted((ade_root / 'annotations' / 'training').glob('*.png')):
        label = np.array(Image.open(png))
        img = np.array(Image.open(ade_root / 'images' / 'training' / (png.stem + '.jpg')))
        for value in hues:
            region = label == value
            if region.sum() > 50:
                r, g, b = img[region].astype(np.float32).mean(0) / 255
                hues[value].append(colorsys.rgb_to_hsv(r, g, b)[0])
    nominal = {2: 0.0, 3: 0.33, 4: 0.62, 5: 0.15}
    for value, found in hues.items():
        assert found, f'no region of label {value} ({ADE_LABELS[value][1]})'
        for hue in found:
            circular = min(abs(hue - nominal[value]), 1 - abs(hue - nominal[value]))
            assert circular < 0.06, (value, hue)


# ------------------------------------------------------------------------------------ ImageNet
def test_imagenet_folder_reads_with_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder
    root = tmp_path / 'imagenet'
    make_imagenet(root, num_train=12, num_val=5, size=(48, 40))
    train = ImageFolder(str(root / 'train'))
    val = ImageFolder(str(root / 'val'))
    assert tuple(train.classes) == IMAGENET_CLASSES == tuple(val.classes)
    assert len(train) == 12 and len(val) == 5
    assert np.bincount(train.targets).tolist() == [3, 3, 2, 2, 2]
    img, target = train[0]
    assert img.size == (40, 48) and img.mode == 'RGB'
    # the mmpretrain-style list files agree with the folders
    listed = dict(line.split() for line in (root / 'meta/train.txt').read_text().splitlines())
    for path, target in train.samples:
        assert int(listed[os.path.relpath(path, root / 'train')]) == target


# --------------------------------------------------------------------------------- determinism
def _all_files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob('*') if p.is_file())


def test_same_seed_gives_byte_identical_files(tmp_path):
    kw = dict(num_train=4, num_val=2, size=(48, 64), seed=7)
    make_toy_data(tmp_path / 'a', **kw)
    make_toy_data(tmp_path / 'b', **kw)
    files = _all_files(tmp_path / 'a')
    assert files == _all_files(tmp_path / 'b') and len(files) > 30
    for rel in files:
        assert filecmp.cmp(tmp_path / 'a' / rel, tmp_path / 'b' / rel, shallow=False), rel
    make_toy_data(tmp_path / 'c', **dict(kw, seed=8))
    ann = 'coco/annotations/instances_train2017.json'
    assert (tmp_path / 'a' / ann).read_bytes() != (tmp_path / 'c' / ann).read_bytes()


def test_more_images_keep_the_first_ones(tmp_path):
    make_coco(tmp_path / 'small', num_train=2, num_val=1, size=(64, 64))
    make_coco(tmp_path / 'big', num_train=4, num_val=1, size=(64, 64))
    small = json.loads((tmp_path / 'small/annotations/instances_train2017.json').read_text())
    big = json.loads((tmp_path / 'big/annotations/instances_train2017.json').read_text())
    assert big['images'][:2] == small['images']
    assert big['annotations'][:len(small['annotations'])] == small['annotations']



def test_shapes_larger_than_the_image_are_scaled_to_fit():
    """Train image 287 / val image 197 of the 64x64 ImageNet tree (seed 0) draw a rotated
    shape wider than 62 px: they are generated (scaled to fit) instead of raising."""
    from mmeff.datasets.toy_data import _imagenet_image, _rng
    from mmeff.datasets.toy_shapes import place_polygon
    for split, index in (('train', 287), ('val', 197)):
        img = _imagenet_image(IMAGENET_CLASSES[index % 5], _rng(0, 'imagenet', split, index),
                              64, 64)
        assert img.size == (64, 64)
    square = np.array([[0.0, 0.0], [80.0, 0.0], [80.0, 40.0], [0.0, 40.0]])
    placed = place_polygon(square, 64, 64, np.random.default_rng(0))
    ext = placed.max(axis=0) - placed.min(axis=0)
    assert placed.min() >= 1 and placed[:, 0].max() <= 63 and placed[:, 1].max() <= 63
    assert ext[0] == pytest.approx(62, abs=0.02) and ext[1] == pytest.approx(31, abs=0.02)


def test_fitting_shapes_are_placed_as_before():
    """A shape that fits is only translated, with the same two draws as before the scaling
    existed (the images of every count that worked are unchanged)."""
    from mmeff.datasets.toy_shapes import place_polygon
    tri = np.array([[-10.0, -5.0], [20.0, 3.0], [0.0, 25.0]])
    rng = np.random.default_rng(3)
    x0, y0 = rng.uniform(1, 64 - 1 - 30), rng.uniform(1, 48 - 1 - 30)
    expected = np.round(tri - tri.min(axis=0) + np.array([x0, y0]), 2)
    np.testing.assert_array_equal(place_polygon(tri, 48, 64, np.random.default_rng(3)),
                                  expected)

# ------------------------------------------------------------------------------ arguments, CLI
def test_refuses_to_mix_with_an_earlier_generation(tmp_path):
    make_imagenet(tmp_path, num_train=5, num_val=5, size=(32, 32))
    with pytest.raises(FileExistsError, match='overwrite'):
        make_imagenet(tmp_path, num_train=2, num_val=1, size=(32, 32))
    make_imagenet(tmp_path, num_train=2, num_val=1, size=(32, 32), overwrite=True)
    assert len(list((tmp_path / 'train').rglob('*.JPEG'))) == 2  # no stale images left


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'num_train'), (dict(size=(16, 64)), 'size'),
    (dict(seed=-1), 'seed')])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_ade(tmp_path, **{**dict(num_train=1, num_val=1, size=(32, 32)), **kwargs})
    with pytest.raises(ValueError, match='valid kinds'):
        make_toy_data(tmp_path, kinds=['cityscapes'])


def test_unknown_shape_lists_the_valid_ones():
    from mmeff.datasets.toy_shapes import shape_polygon
    with pytest.raises(ValueError, match=r"unknown shape 'hexagon'; valid shapes: \('rectangle'"):
        shape_polygon('hexagon', 10.0, np.random.default_rng(0))


def test_cli_writes_the_data_layout(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_toy_data_cli', Path(__file__).parents[2] / 'tools' / 'make_toy_data.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(['--out', str(tmp_path), '--num-train', '2', '--num-val', '1', '--size', '40', '48'])
    out = capsys.readouterr().out
    for kind, sub in TOY_SUBDIRS.items():
        assert str(tmp_path / sub) in out
    assert (tmp_path / 'coco/annotations/instances_val2017.json').is_file()
    assert len(list((tmp_path / 'ade/ADEChallengeData2016/images/training').glob('*.jpg'))) == 2
    assert Image.open(next((tmp_path / 'imagenet/val').rglob('*.JPEG'))).size == (48, 40)
    with pytest.raises(SystemExit, match='--overwrite'):
        cli.main(['--out', str(tmp_path), '--kinds', 'coco'])
