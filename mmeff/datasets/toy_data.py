"""Small, deterministic datasets in the real on-disk formats (COCO, ADE20K, ImageNet folders).

They let the training/test tools, the demo and the tests run the real MMDet / MMSeg / torchvision
loaders without downloading anything. The tasks are easy on purpose (class tied to shape and/or
colour, objects of reasonable size) so that a small model visibly learns them in minutes on a CPU.

Every image is drawn from its own generator seeded with ``(seed, kind, split, index)``: the same
seed gives byte-identical files, and asking for more images keeps the first ones unchanged.

Layouts (``root`` is what a config's ``data_root`` points at)::

    make_coco(root)      root/annotations/instances_{train,val}2017.json, root/{train,val}2017/*.jpg
    make_ade(root)       root/images/{training,validation}/*.jpg
                         root/annotations/{training,validation}/*.png   (uint8, 0 = "other")
    make_imagenet(root)  root/{train,val}/<class>/*.JPEG, root/meta/{train,val}.txt

``make_toy_data(out)`` writes all three under ``out/coco``, ``out/ade/ADEChallengeData2016`` and
``out/imagenet``, mirroring the ``data/`` layout of the real datasets.
"""
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from mmeff.datasets.toy_shapes import (add_pixel_noise, boxes_overlap, checker, draw_polygon, hsv_color,
                         noisy_background, place_polygon, polygon_area, random_vivid_color,
                         shape_polygon, stripes)

Size = Tuple[int, int]

#: COCO category names; category ids are 1, 2, 3 in this order. The class is the shape, the
#: colour is random. Configs pass ``metainfo=dict(classes=COCO_CLASSES)`` to MMDet's CocoDataset.
COCO_CLASSES = ('rectangle', 'ellipse', 'triangle')

#: ADE20K label value -> (ADE20K class name, what the toy scene paints with it). Label maps store
#: the values as ADE20K does (0 = "other", ignored with ``reduce_zero_label=True``), so value k
#: becomes class index k - 1 of MMSeg's ADE20KDataset. A config that wants a 5-class head passes
#: ``metainfo=dict(classes=ADE_CLASSES)``; the names are a subset of ADE20K's, as MMSeg requires.
ADE_LABELS: Dict[int, Tuple[str, str]] = {
    1: ('wall', 'textured background'),
    2: ('building', 'red ellipses'),
    3: ('sky', 'green rectangles'),
    4: ('floor', 'blue triangles'),
    5: ('tree', 'yellow diamonds'),
}
ADE_CLASSES = tuple(name for name, _ in ADE_LABELS.values())
# label value -> (shape, hue); the background (1) and "other" clutter (0) are drawn separately.
_ADE_SHAPES = {2: ('ellipse', 0.0), 3: ('rectangle', 0.33), 4: ('triangle', 0.62),
               5: ('diamond', 0.15)}

#: ImageNet-style class folders, in ImageFolder's (sorted) order. Shapes have random colours;
#: the two texture classes have random orientation/scale.
IMAGENET_CLASSES = ('checker', 'ellipse', 'rectangle', 'stripes', 'triangle')

#: where make_toy_data puts each kind under its ``out`` directory
TOY_SUBDIRS = {'coco': 'coco', 'ade': 'ade/ADEChallengeData2016', 'imagenet': 'imagenet'}
DEFAULTS = {  # num_train, num_val, (height, width)
    'coco': (128, 32, (256, 256)),
    'ade': (128, 32, (256, 256)),
    'imagenet': (250, 50, (64, 64)),
}
_KIND_CODE = {'coco': 1, 'ade': 2, 'imagenet': 3}
_JPEG = dict(format='JPEG', quality=95, subsampling=0)


def _rng(seed: int, kind: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_CODE[kind], 0 if split == 'train' else 1, index])


def _check_args(num_train: int, num_val: int, size: Size, seed: int) -> Size:
    if int(num_train) < 1 or int(num_val) < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train} and {num_val}')
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f'size must be (height, width) with both >= 32, got {size}')
    if int(seed) < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed}')
    return int(size[0]), int(size[1])


def _prepare(root: Path, subdirs: Sequence[str], overwrite: bool) -> None:
    """Create ``root``; refuse to mix with an earlier generation unless ``overwrite``."""
    existing = [root / d for d in subdirs if (root / d).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f'{root} already holds a dataset ({", ".join(str(p) for p in existing)}). Stale '
            'files would be mixed with the new ones: pass overwrite=True (--overwrite) or pick '
            'another output directory.')
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for d in subdirs:
        (root / d).mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(',', ':')) + '\n')


def _write_meta(root: Path, kind: str, seed: int, extra: dict) -> None:
    meta = {'generator': 'mmeff.datasets.toy_data', 'kind': kind, 'seed': seed, **extra}
    (root / 'toy_meta.json').write_text(json.dumps(meta, indent=2) + '\n')


# ---------------------------------------------------------------------------------------- COCO
def _coco_image(rng: np.random.Generator, height: int,
                width: int) -> Tuple[Image.Image, List[Tuple[int, np.ndarray]]]:
    """1-4 non-overlapping shapes of random colour; returns the image and (label, polygon)s."""
    img = noisy_background(height, width, rng)
    draw = ImageDraw.Draw(img)
    objects: List[Tuple[int, np.ndarray]] = []
    boxes: List[np.ndarray] = []
    side = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        label = int(rng.integers(len(COCO_CLASSES)))
        for _attempt in range(20):
            poly = shape_polygon(COCO_CLASSES[label], rng.uniform(0.18, 0.42) * side, rng)
            poly = place_polygon(poly, height, width, rng)
            box = np.concatenate([poly.min(0), poly.max(0)])
            if not any(boxes_overlap(box, b, margin=3) for b in boxes):
                boxes.append(box)
                objects.append((label, poly))
                draw_polygon(draw, poly, random_vivid_color(rng))
                break
    return add_pixel_noise(img, rng), objects


def make_coco(root, num_train: int = DEFAULTS['coco'][0], num_val: int = DEFAULTS['coco'][1],
              size: Size = DEFAULTS['coco'][2], seed: int = 0, overwrite: bool = False) -> dict:
    """Write a COCO-format instance-segmentation dataset (polygon masks) under ``root``."""
    height, width = _check_args(num_train, num_val, size, seed)
    root = Path(root)
    _prepare(root, ['annotations', 'train2017', 'val2017'], overwrite)
    categories = [{'id': i + 1, 'name': n, 'supercategory': 'shape'}
                  for i, n in enumerate(COCO_CLASSES)]
    summary = {'root': str(root), 'classes': COCO_CLASSES}
    for split, count, first_id in (('train', num_train, 1), ('val', num_val, 1_000_001)):
        images, anns = [], []
        for index in range(int(count)):
            img, objects = _coco_image(_rng(seed, 'coco', split, index), height, width)
            image_id = first_id + index
            file_name = f'{image_id:012d}.jpg'
            img.save(root / f'{split}2017' / file_name, **_JPEG)
            images.append({'id': image_id, 'file_name': file_name, 'height': height,
                           'width': width})
            for label, poly in objects:
                x0, y0 = poly.min(0)
                x1, y1 = poly.max(0)
                anns.append({
                    'id': len(anns) + 1 + (0 if split == 'train' else 10_000_000),
                    'image_id': image_id, 'category_id': label + 1,
                    'segmentation': [[round(float(v), 2) for v in poly.reshape(-1)]],
                    'area': round(polygon_area(poly), 2),
                    'bbox': [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    'iscrowd': 0,
                })
        _write_json(root / 'annotations' / f'instances_{split}2017.json', {
            'info': {'description': f'mmeff toy shapes (seed {seed})', 'version': '1.0'},
            'licenses': [], 'images': images, 'annotations': anns, 'categories': categories})
        summary[f'num_{split}'] = len(images)
        summary[f'num_{split}_objects'] = len(anns)
    _write_meta(root, 'coco', seed, {'classes': list(COCO_CLASSES)})
    return summary


# ----------------------------------------------------------------------------------------- ADE
def _ade_image(rng: np.random.Generator, height: int,
               width: int) -> Tuple[Image.Image, Image.Image]:
    """Background (label 1), maybe a grey "other" blob (0), then 2-5 coloured shapes (2..5)."""
    img = noisy_background(height, width, rng)
    label = Image.new('L', (width, height), 1)
    draw, draw_label = ImageDraw.Draw(img), ImageDraw.Draw(label)
    side = min(height, width)
    if rng.random() < 0.5:  # unlabelled clutter, as ADE20K has: a grey irregular blob
        n = 7
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.05, 0.15, n) * side
        blob = np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
        blob = place_polygon(blob, height, width, rng)
        draw_polygon(draw, blob, hsv_color(rng.random(), rng, sat=(0, 0.1), val=(0.5, 0.9)))
        draw_polygon(draw_label, blob, 0)
    for _ in range(int(rng.integers(2, 6))):
        value = int(rng.integers(2, 6))
        shape, hue = _ADE_SHAPES[value]
        poly = place_polygon(shape_polygon(shape, rng.uniform(0.15, 0.4) * side, rng),
                             height, width, rng)
        draw_polygon(draw, poly, hsv_color(hue + rng.uniform(-0.03, 0.03), rng))
        draw_polygon(draw_label, poly, value)
    return add_pixel_noise(img, rng), label


def toy_image(kind: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """One toy scene as an RGB uint8 (H, W, 3) array, drawn like validation image 0 of
    ``make_coco`` / ``make_ade`` (``kind`` 'coco' or 'ade') but without writing files: the
    image export parity checks feed to MMDet's / MMSeg's predict and to the exported graph."""
    drawers = {'coco': _coco_image, 'ade': _ade_image}
    if kind not in drawers:
        raise ValueError(f'toy_image kind must be one of {sorted(drawers)}, got {kind!r}')
    height, width = _check_args(1, 1, (height, width), seed)
    image = drawers[kind](_rng(seed, kind, 'val', 0), height, width)[0]
    return np.asarray(image.convert('RGB'))


def make_ade(root, num_train: int = DEFAULTS['ade'][0], num_val: int = DEFAULTS['ade'][1],
             size: Size = DEFAULTS['ade'][2], seed: int = 0, overwrite: bool = False) -> dict:
    """Write an ADEChallengeData2016-style semantic-segmentation dataset under ``root``."""
    height, width = _check_args(num_train, num_val, size, seed)
    root = Path(root)
    _prepare(root, ['images', 'annotations'], overwrite)
    summary = {'root': str(root), 'classes': ADE_CLASSES}
    for split, folder, count in (('train', 'training', num_train),
                                 ('val', 'validation', num_val)):
        (root / 'images' / folder).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / folder).mkdir(parents=True, exist_ok=True)
        for index in range(int(count)):
            img, label = _ade_image(_rng(seed, 'ade', split, index), height, width)
            stem = f'ADE_{split}_{index + 1:08d}'
            img.save(root / 'images' / folder / f'{stem}.jpg', **_JPEG)
            label.save(root / 'annotations' / folder / f'{stem}.png', format='PNG')
        summary[f'num_{split}'] = int(count)
    _write_meta(root, 'ade', seed, {
        'labels': {str(k): {'ade20k_name': n, 'toy_content': c} for k, (n, c) in
                   ADE_LABELS.items()},
        'ignored': {'0': 'other (grey blobs); reduce_zero_label=True maps it to 255'}})
    return summary


# ------------------------------------------------------------------------------------ ImageNet
def _imagenet_image(cls: str, rng: np.random.Generator, height: int, width: int) -> Image.Image:
    if cls == 'stripes':
        img = stripes(height, width, rng)
    elif cls == 'checker':
        img = checker(height, width, rng)
    else:
        img = noisy_background(height, width, rng)
        side = min(height, width)
        poly = place_polygon(shape_polygon(cls, rng.uniform(0.45, 0.85) * side, rng),
                             height, width, rng)
        draw_polygon(ImageDraw.Draw(img), poly, random_vivid_color(rng))
    return add_pixel_noise(img, rng, sigma=6.0)


def make_imagenet(root, num_train: int = DEFAULTS['imagenet'][0],
                  num_val: int = DEFAULTS['imagenet'][1], size: Size = DEFAULTS['imagenet'][2],
                  seed: int = 0, overwrite: bool = False) -> dict:
    """Write an ImageNet-style class-folder tree; image i of a split is of class i % 5."""
    height, width = _check_args(num_train, num_val, size, seed)
    root = Path(root)
    _prepare(root, ['train', 'val', 'meta'], overwrite)
    summary = {'root': str(root), 'classes': IMAGENET_CLASSES}
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for cls in IMAGENET_CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
        for index in range(int(count)):
            label = index % len(IMAGENET_CLASSES)
            cls = IMAGENET_CLASSES[label]
            rel = f'{cls}/{split}_{index:06d}.JPEG'
            _imagenet_image(cls, _rng(seed, 'imagenet', split, index), height,
                            width).save(root / split / rel, **_JPEG)
            lines.append(f'{rel} {label}')
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
        summary[f'num_{split}'] = int(count)
    (root / 'meta' / 'classes.txt').write_text('\n'.join(IMAGENET_CLASSES) + '\n')
    _write_meta(root, 'imagenet', seed, {'classes': list(IMAGENET_CLASSES)})
    return summary


MAKERS = {'coco': make_coco, 'ade': make_ade, 'imagenet': make_imagenet}


def make_toy_data(out, kinds: Iterable[str] = tuple(MAKERS), seed: int = 0,
                  num_train: Optional[int] = None, num_val: Optional[int] = None,
                  size: Optional[Size] = None, overwrite: bool = False) -> Dict[str, dict]:
    """Write each kind under ``out/<TOY_SUBDIRS[kind]>``; ``None`` means that kind's default."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in MAKERS]
    if unknown:
        raise ValueError(f'unknown dataset kind(s) {unknown}; valid kinds: {list(MAKERS)}')
    results = {}
    for kind in kinds:
        d_train, d_val, d_size = DEFAULTS[kind]
        results[kind] = MAKERS[kind](
            os.path.join(out, TOY_SUBDIRS[kind]),
            num_train=d_train if num_train is None else num_train,
            num_val=d_val if num_val is None else num_val,
            size=tuple(size) if size else d_size, seed=seed, overwrite=overwrite)
    return results
