"""The frozen timm teacher of DeiT-style hard distillation.

The teacher must never be trained, saved or averaged: it is kept *outside* the module tree of
the student (so ``state_dict()``, ``parameters()``, the optimizer, DDP and ``train()`` never see
it) inside a :class:`FrozenTeacher` holder, which moves with the student (``_apply``) and is
shared, not copied, by ``copy.deepcopy`` (EMA copies of the student would otherwise duplicate an
84M-parameter RegNetY-16GF).
"""
import difflib
import inspect
import os
import sys
from typing import Callable, Optional

import timm
import torch
from torch import nn

from mmeff.checkpoint.io import read_state_dict

#: where DeiT published the RegNetY-16GF teacher used by EfficientFormer V1/V2 (mmeff downloads
#: it only when a config names this URL)
DEIT_REGNETY_160_URL = 'https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth'


def _check_known(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Close matches: {close}.' if close else ''
    raise ValueError(
        f'unknown teacher model {name!r}: timm {timm.__version__} has no model of that name.'
        f'{hint} List the valid names with timm.list_models() (e.g. '
        f"timm.list_models('regnety*')); the papers' teacher is 'regnety_160' (RegNetY-16GF).")


def _module_filter_fn(model: nn.Module) -> Optional[Callable]:
    """timm's own key-remapping function for the model's family, if it has one."""
    module = sys.modules.get(type(model).__module__)
    for attr in ('checkpoint_filter_fn', '_filter_fn'):
        fn = getattr(module, attr, None)
        if callable(fn):
            return fn
    return None


def _read(checkpoint: str) -> dict:
    """A ``.pth`` (plain or ``{'model': ...}``, as DeiT saves) or a ``.safetensors`` file."""
    if str(checkpoint).endswith('.safetensors'):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f'teacher checkpoint not found: {checkpoint!r}; pass the path '
                                    'of a local file, an http(s) URL or a timm: tag')
        from safetensors.torch import load_file
        return load_file(checkpoint)
    return read_state_dict(checkpoint)


def _load_teacher_weights(model: nn.Module, state_dict: dict, checkpoint: str, name: str) -> None:
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        fn = _module_filter_fn(model)
        if fn is not None:
            args = (state_dict, model) if len(inspect.signature(fn).parameters) >= 2 \
                else (state_dict,)
            try:
                result = model.load_state_dict(fn(*args), strict=False)
            except Exception:  # the filter does not apply to this layout: report the first try
                pass
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f'teacher checkpoint {checkpoint!r} does not match timm model {name!r}: '
            f'{len(result.missing_keys)} keys missing (e.g. {result.missing_keys[:3]}), '
            f'{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}). '
            'Give the state dict of that timm model (a plain dict or {"model": ...}).')


class FrozenTeacher:
    """A timm classifier in eval mode with gradients off, deliberately not an ``nn.Module``.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. ``'regnety_160'``.
        checkpoint: path of a local ``.pth`` or ``.safetensors`` file with its weights; nothing
            is downloaded. DeiT's RegNetY-16GF is at :data:`DEIT_REGNETY_160_URL` (timm's
            ``regnety_160.deit_in1k``); keys of older timm layouts go through the timm model
            module's own filter function.
        num_classes: classes of the teacher's head; must equal the student's.
        **kwargs: further ``timm.create_model`` arguments.
    """

    def __init__(self, name: str, checkpoint: Optional[str] = None, num_classes: int = 1000,
                 **kwargs):
        if not isinstance(name, str) or not name:
            raise ValueError(f'teacher needs name=<timm model name>, got {name!r}')
        _check_known(name)
        if not checkpoint:
            raise ValueError(
                f'teacher {name!r} needs checkpoint=<file, URL or timm: tag>: a randomly initialised '
                'teacher would distil noise. For the papers\' RegNetY-16GF pass '
                f'checkpoint={DEIT_REGNETY_160_URL!r} (downloaded once into torch hub\'s cache) or '
                'the path of a local copy.')
        self.name = name
        state_dict = _read(checkpoint)  # before building: a missing file fails fast
        self.model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        _load_teacher_weights(self.model, state_dict, checkpoint, name)
        self.model.eval()
        self.model.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.model.training:  # someone called .train() on it directly
            self.model.eval()
        return self.model(images)

    def apply_(self, fn: Callable) -> None:
        """Follow the student's ``.to()`` / ``.cuda()`` / ``.half()`` (``nn.Module._apply``)."""
        self.model._apply(fn)

    def __deepcopy__(self, memo: dict) -> 'FrozenTeacher':
        return self  # frozen: sharing it is safe, copying it only costs memory

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return f'FrozenTeacher({self.name!r}, {params / 1e6:.1f}M params)'
