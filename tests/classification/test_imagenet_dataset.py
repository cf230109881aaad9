"""The ImageNet class-folder dataset: scanning, labels, timm transforms, clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment

from mmeff.datasets.imagenet import ImageNet
from mmeff.datasets.timm_compat import fix_posterize
from mmeff.registry import DATASETS


def _write(root, split, classes, per_class=2, size=(40, 48)):
    rng = np.random.default_rng(0)
    for name in classes:
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f'{name}_{i}.JPEG', format='JPEG')


def test_train_and_val_share_the_train_label_order(tmp_path):
    _write(tmp_path, 'train', ['n02', 'n01', 'n03'])
    _write(tmp_path, 'val', ['n03', 'n01'], per_class=1)  # val lacks a class: labels stay put
    train = DATASETS.build(dict(type='mmeff.ImageNet', data_root=str(tmp_path), img_size=32))
    val = ImageNet(data_root=str(tmp_path), split='val', img_size=32)
    assert train.metainfo['classes'] == val.metainfo['classes'] == ('n01', 'n02', 'n03')
    assert len(train) == 6 and train.num_classes == 3
    assert sorted(val.get_data_info(i)['gt_label'] for i in range(len(val))) == [0, 2]
    item = train[0]
    assert item['inputs'].dtype == torch.uint8 and item['inputs'].shape == (3, 32, 32)
    assert item['data_samples']['gt_label'] in (0, 1, 2)
    assert val[0]['inputs'].shape == (3, 32, 32)


def test_deit_transforms_come_from_timm(tmp_path):
    _write(tmp_path, 'train', ['a'])
    train = ImageNet(data_root=str(tmp_path), img_size=32)
    names = [type(t).__name__ for t in train.transform.transforms]
    assert names[0] == 'RandomResizedCropAndInterpolation' and 'RandAugment' in names
    assert train.transform_cfg['auto_augment'] == 'rand-m9-mstd0.5-inc1'
    val = ImageNet(data_root=str(tmp_path), split='train', train=False, img_size=224)
    resize, crop = val.transform.transforms[:2]
    assert resize.size == 256 and tuple(crop.size) == (224, 224)  # resize 256, centre crop 224


def test_posterize_at_full_magnitude_does_not_crash_with_new_pillow(tmp_path):
    _write(tmp_path, 'train', ['a'])
    train = ImageNet(data_root=str(tmp_path), img_size=32)
    policy = next(t for t in train.transform.transforms if isinstance(t, RandAugment))
    op = next(o for o in policy.ops if o.name == 'PosterizeIncreasing')
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # keeps 0 bits: the old crash
    image = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    assert np.asarray(op(image)).max() == 0  # old Pillow's result: all black
    assert fix_posterize(train.transform) == 0  # already patched, idempotent


def test_folder_without_class_subfolders_names_path_and_layout(tmp_path):
    flat = tmp_path / 'val'
    flat.mkdir()
    Image.new('RGB', (8, 8)).save(flat / 'ILSVRC2012_val_00000001.JPEG')
    with pytest.raises(ValueError) as err:
        ImageNet(data_root=str(tmp_path), split='val')
    msg = str(err.value)
    assert str(flat) in msg and '1 image files directly inside' in msg
    assert '<data_root>/{train,val}/<class>/<image>' in msg and 'make_imagenet' in msg


def test_missing_folder_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist.*class-folder layout'):
        ImageNet(data_root=str(tmp_path / 'nowhere'))
    _write(tmp_path, 'train', ['a'])
    _write(tmp_path, 'val', ['a', 'zzz'], per_class=1)
    with pytest.raises(ValueError, match=r"class folders \['zzz'\]"):
        ImageNet(data_root=str(tmp_path), split='val')
    with pytest.raises(ValueError, match='data preprocessor'):
        ImageNet(data_root=str(tmp_path), transform=dict(re_prob=0.25))
    with pytest.raises(ValueError, match="'ann_file' is not used"):
        ImageNet(data_root=str(tmp_path), ann_file='meta/train.txt')
    (tmp_path / 'empty' / 'c').mkdir(parents=True)
    with pytest.raises(ValueError, match='no images'):
        ImageNet(data_root=str(tmp_path), split='empty', classes=['c'])
