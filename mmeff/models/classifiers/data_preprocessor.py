"""Batch-level preprocessing of the DeiT recipe: normalise, random erasing, mixup/cutmix.

The dataset sends uint8 images (timm's ``create_transform(..., use_prefetcher=True)``); this
module does on the device what timm's own ``PrefetchLoader`` + ``Mixup`` do: normalise, then
random erasing (it needs normalised pixels: it fills with N(0, 1) noise), then mixup/cutmix,
which turns the labels into soft targets. All three are timm's classes, not copies.
"""
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.model import ImgDataPreprocessor
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing

from mmeff.registry import MODELS

#: ImageNet statistics on the 0-255 scale (timm's IMAGENET_DEFAULT_MEAN/STD x 255)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@MODELS.register_module()
class ClsDataPreprocessor(ImgDataPreprocessor):
    """Normalise uint8 batches; in training also random erasing and mixup/cutmix.

    Args:
        mean, std: per-channel statistics on the 0-255 scale (RGB).
        random_erasing: ``timm.data.random_erasing.RandomErasing`` arguments, e.g. DeiT's
            ``dict(probability=0.25, mode='pixel')``; None disables it.
        mixup: ``timm.data.Mixup`` arguments, e.g. DeiT's ``dict(mixup_alpha=0.8,
            cutmix_alpha=1.0, label_smoothing=0.1, num_classes=1000)``; None disables it.
            Needs even training batches (use ``drop_last=True`` and an even batch size).

    The batch's ``data_samples`` become ``{'gt_label': LongTensor(B)}``, plus
    ``'gt_score': (B, num_classes)`` soft targets when mixup ran.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN_255,
                 std: Sequence[float] = IMAGENET_STD_255,
                 random_erasing: Optional[dict] = None, mixup: Optional[dict] = None,
                 non_blocking: bool = False):
        super().__init__(mean=mean, std=std, non_blocking=non_blocking)
        self.random_erasing_cfg = dict(random_erasing) if random_erasing else None
        self.mixup = Mixup(**mixup) if mixup else None
        self._erasers: Dict[str, RandomErasing] = {}

    @property
    def num_classes(self) -> Optional[int]:
        return self.mixup.num_classes if self.mixup is not None else None

    def _eraser(self, device: torch.device) -> Optional[RandomErasing]:
        if self.random_erasing_cfg is None:
            return None
        key = str(device)
        if key not in self._erasers:  # RandomErasing draws its noise on a fixed device
            self._erasers[key] = RandomErasing(**self.random_erasing_cfg, device=device)
        return self._erasers[key]

    @staticmethod
    def _labels(samples: Union[dict, Sequence[dict], None], device) -> Optional[torch.Tensor]:
        """``gt_label`` of a default_collate'd dict or a pseudo_collate'd list, as (B,)."""
        if samples is None:
            return None
        if isinstance(samples, dict):
            label = samples.get('gt_label')
        else:
            label = [s['gt_label'] if isinstance(s, dict) else s.gt_label for s in samples]
        if label is None:
            return None
        return torch.as_tensor(label, device=device).long().view(-1)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        inputs = data['inputs']
        label = self._labels(data.get('data_samples'), inputs.device)
        samples = {} if label is None else {'gt_label': label}
        if training:
            eraser = self._eraser(inputs.device)
            if eraser is not None:
                inputs = eraser(inputs)
            if self.mixup is not None:
                if label is None:
                    raise ValueError('mixup needs the labels of the training batch '
                                     "(data_samples['gt_label'])")
                if inputs.shape[0] % 2:
                    raise ValueError(
                        f'mixup/cutmix needs an even batch size, got {inputs.shape[0]}: use an '
                        'even train_dataloader.batch_size and drop_last=True')
                inputs, samples['gt_score'] = self.mixup(inputs, label)
        data['inputs'] = inputs
        data['data_samples'] = samples or None
        return data
