"""ImageNet-1k in the class-folder layout, with the DeiT/timm augmentation built by timm.

Layout (``data_root``)::

    train/<class>/<image>      e.g. train/n01440764/n01440764_10026.JPEG
    val/<class>/<image>        the 50k val images sorted into the same class folders

Images go through ``timm.data.create_transform`` with ``use_prefetcher=True`` and come out as
uint8 CHW tensors; normalisation, random erasing and mixup/cutmix run batched on the device in
:class:`mmeff.models.ClsDataPreprocessor` — timm's own split between its loader and its
``PrefetchLoader``/``Mixup``.
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from PIL import Image
from timm.data import create_transform

from mmeff.registry import DATASETS
from mmeff.datasets.timm_compat import fix_posterize

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')

#: DeiT's training augmentation (timm names); everything after the crop but random erasing
DEIT_TRAIN_TRANSFORM = dict(auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic',
                            color_jitter=0.4, hflip=0.5)
#: DeiT's evaluation: resize to img_size / 0.875 (256 for 224), centre crop img_size
DEIT_EVAL_TRANSFORM = dict(interpolation='bicubic', crop_pct=0.875)

_LAYOUT = ('expected the ImageNet class-folder layout <data_root>/{train,val}/<class>/<image> '
           '(e.g. train/n01440764/n01440764_10026.JPEG; the original val archive is flat: sort '
           'it into class folders first). For a small test tree run '
           "python tools/make_toy_data.py --kinds imagenet (writes data/toy/imagenet; set "
           "data_root to it), or call mmeff.datasets.toy_data.make_imagenet(root)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def class_folders(folder: str) -> List[str]:
    """Sorted class sub-folders of ``folder``; clear errors when it is not a class tree."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'ImageNet folder {folder!r} does not exist: {_LAYOUT}')
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith('.')]
    if not classes:
        images = sum(1 for e in entries if e.is_file() and _is_image(e.name))
        found = f'{images} image files directly inside and ' if images else ''
        raise ValueError(f'ImageNet folder {folder!r} has {found}no class sub-folders: {_LAYOUT}')
    return classes


@DATASETS.register_module()
class ImageNet(BaseDataset):
    """One split of an ImageNet-style class-folder tree.

    Args:
        data_root: the folder holding ``train/`` and ``val/``.
        split: sub-folder to read (``'train'``, ``'val'``, ...).
        img_size: side of the square network input (224 on ImageNet; tests use less).
        train: use the training augmentation; default: ``split == 'train'``.
        classes: class folder names in label order. Default: the folders of ``train/`` when it
            exists (so every split uses the labels the model was trained with), else of ``split``.
        transform: overrides of ``timm.data.create_transform`` arguments on top of DeiT's
            (:data:`DEIT_TRAIN_TRANSFORM` / :data:`DEIT_EVAL_TRANSFORM`).
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``indices``,
            ``serialize_data``, ``lazy_init``, ...).
    """

    METAINFO: Dict[str, Any] = {'classes': ()}

    def __init__(self, data_root: str = 'data/imagenet', split: str = 'train',
                 img_size: Union[int, Tuple[int, int]] = 224, train: Optional[bool] = None,
                 classes: Optional[Sequence[str]] = None, transform: Optional[dict] = None,
                 **kwargs):
        for key in ('ann_file', 'data_prefix', 'pipeline'):
            if key in kwargs:
                raise ValueError(f'{key!r} is not used by mmeff.ImageNet: images are found in '
                                 '<data_root>/<split>/<class>/ and transformed by timm '
                                 '(use split=, img_size=, transform=)')
        transform = dict(transform or {})
        if any(k.startswith('re_') for k in transform):
            raise ValueError(
                'random erasing needs normalised pixels and runs batched in the data '
                "preprocessor: set model.data_preprocessor.random_erasing=dict(probability=0.25, "
                "mode='pixel') instead of transform re_* arguments")
        self.split = split
        self.img_size = img_size
        self.train_mode = split == 'train' if train is None else bool(train)
        self._classes = list(classes) if classes is not None else None
        recipe = DEIT_TRAIN_TRANSFORM if self.train_mode else DEIT_EVAL_TRANSFORM
        self.transform_cfg = {**recipe, **transform}
        self.transform = create_transform(input_size=img_size, is_training=self.train_mode,
                                          use_prefetcher=True, **self.transform_cfg)
        fix_posterize(self.transform)
        super().__init__(data_root=data_root, test_mode=not self.train_mode, **kwargs)

    @property
    def split_dir(self) -> str:
        return osp.join(self.data_root, self.split)

    def _label_classes(self) -> List[str]:
        if self._classes is not None:
            return self._classes
        train_dir = osp.join(self.data_root, 'train')
        return class_folders(train_dir if osp.isdir(train_dir) else self.split_dir)

    def load_data_list(self) -> List[dict]:
        """Scan ``<data_root>/<split>/<class>/`` (recursively, like torchvision ImageFolder)."""
        present = class_folders(self.split_dir)
        classes = self._label_classes()
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise ValueError(f'{self.split_dir!r} has class folders {unknown[:5]} that the label '
                             f'list (from the train split or classes=) lacks; {_LAYOUT}')
        self._metainfo['classes'] = tuple(classes)
        data_list = []
        for label, name in enumerate(classes):
            folder = osp.join(self.split_dir, name)
            if not osp.isdir(folder):
                continue  # a split may lack a class (e.g. small val subsets)
            for root, _, files in sorted(os.walk(folder, followlinks=True)):
                for file in sorted(files):
                    if _is_image(file):
                        data_list.append({'img_path': osp.join(root, file), 'gt_label': label})
        if not data_list:
            raise ValueError(f'no images ({", ".join(IMG_EXTENSIONS)}) under {self.split_dir!r}; '
                             f'{_LAYOUT}')
        return data_list

    def prepare_data(self, idx: int) -> dict:
        info = self.get_data_info(idx)
        with Image.open(info['img_path']) as img:
            image = self.transform(img.convert('RGB'))
        return {'inputs': image, 'data_samples': {'gt_label': info['gt_label']}}

    @property
    def num_classes(self) -> int:
        return len(self.metainfo['classes'])
