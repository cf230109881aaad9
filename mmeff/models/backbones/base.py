"""The contract every mmeff backbone follows (docs/design.md, "The backbone contract").

A family subclass provides its arch table (``arch_zoo``) and arch-dict check
(``validate_arch``, from the family's ``arch.py``), builds ``self.stem`` (stride-4 or stride-16
patch embedding), ``self.stages`` (an ``nn.ModuleList``; stage i includes the downsampling that
enters it) and the per-output norms, declares its stages with :meth:`set_stages` and implements
``forward``. This base class supplies what must behave the same in all families, the way MMDet's
ResNet does it: arch lookup and validation with clear errors (:meth:`resolve_arch`), validation
of ``in_channels``, ``out_indices`` and ``frozen_stages``, ``out_channels`` / ``out_strides``,
stage freezing, ``norm_eval`` (also after SyncBN conversion), activation checkpointing, input
validation, ``init_cfg`` checkpoint loading of every supported layout, and ``switch_to_deploy``.

Every family names its learned attention-bias modules ``attention_bias`` (parameters
``...attention_bias.table``), so one optimizer entry reaches the tables of all of them:
``paramwise_cfg=dict(custom_keys={'attention_bias': dict(decay_mult=0.)})``.
"""
import collections.abc
import copy
from numbers import Integral
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmeff.checkpoint.loader import (LayoutConverter, LoadReport, convert_under_prefix,
                                    load_pretrained)


def _as_tuples(value):
    """Lists and tuples compare equal (configs turn tuples into lists)."""
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


class MobileBackbone(BaseModule):
    """Base class of the EfficientFormer, EfficientFormerV2 and EfficientViT backbones.

    Args:
        out_indices: which stages to output (ints; negative indices allowed).
        frozen_stages: stages to freeze (their parameters get no gradient and their norms stay
            in eval mode). -1 freezes nothing, 0 the stem only, k the stem and stages 0..k-1.
        norm_eval: keep every BatchNorm (including SyncBatchNorm) in eval mode when training.
        with_cp: activation checkpointing of the blocks (saves memory, costs recompute).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` accepts
            any layout the family's converter knows.
        in_channels: input image channels (a positive int).

    ``out_indices`` and ``frozen_stages`` are checked against the number of stages when the
    family calls :meth:`set_stages`.
    """

    #: name -> arch dict; set by each family
    arch_zoo: Dict[str, dict] = {}
    #: keys an arch dict must have
    arch_keys: Tuple[str, ...] = ()
    #: family name used in messages
    family: str = ''
    #: prefixes of parameters that only the dense backbone has (fresh at load time)
    dense_only_prefixes: Tuple[str, ...] = ()

    def __init__(self, out_indices: Sequence[int], frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, in_channels: int = 3):
        super().__init__(init_cfg=init_cfg)
        if not _is_int(in_channels) or in_channels < 1:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        self.in_channels = int(in_channels)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self._raw_out_indices = out_indices
        self._register_load_state_dict_pre_hook(self._convert_layout_on_load)

    # ----------------------------------------------------------------- configuration helpers
    @staticmethod
    def validate_arch(settings: dict) -> dict:
        """Check an arch dict (its required ``arch_keys`` are present) and return it in the
        family's normal form (defaults filled, tuples or lists as the family wants); a
        ValueError names what is wrong. Each family sets this to the function of its
        ``arch.py``; two arch dicts with the same normal form are the same arch."""
        return settings

    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> Tuple[Optional[str], dict]:
        """Return (arch name or None, validated arch settings) with clear errors for bad input.

        A dict that spells out a published arch (lists for tuples, defaults written out) gets
        its name; one that differs in anything, optional keys included, is custom (None)."""
        if isinstance(arch, str):
            name = arch.lower()
            if name not in cls.arch_zoo:
                raise ValueError(f'unknown {cls.family} arch {arch!r}; valid names are '
                                 f'{sorted(cls.arch_zoo)}, or pass a dict with keys '
                                 f'{list(cls.arch_keys)}')
            return name, cls.validate_arch(copy.deepcopy(cls.arch_zoo[name]))
        if isinstance(arch, dict):
            missing = [k for k in cls.arch_keys if k not in arch]
            if missing:
                raise ValueError(f'custom {cls.family} arch dict lacks keys {missing}; '
                                 f'required keys are {list(cls.arch_keys)}')
            settings = cls.validate_arch(copy.deepcopy(dict(arch)))
            name = next((n for n, known in cls.arch_zoo.items()
                         if _as_tuples(cls.validate_arch(copy.deepcopy(known)))
                         == _as_tuples(settings)), None)
            return name, settings
        raise TypeError(f'arch must be a name {sorted(cls.arch_zoo)} or a dict, '
                        f'got {type(arch).__name__}')

    #: channels and stride of each stage's output (set by :meth:`set_stages`)
    stage_channels: Tuple[int, ...] = ()
    stage_strides: Tuple[int, ...] = ()

    def set_stages(self, channels: Sequence[int], strides: Sequence[int]) -> None:
        """Declare the stages (output channels and stride of each), once the arch is known.

        Checks ``out_indices`` (-> ``self.out_indices``, sorted non-negative) and
        ``frozen_stages`` against the number of stages."""
        self.stage_channels = tuple(int(c) for c in channels)
        self.stage_strides = tuple(int(s) for s in strides)
        self.num_stages = len(self.stage_channels)
        self.out_indices = self.normalize_out_indices(self._raw_out_indices, self.num_stages)
        self.frozen_stages = self.check_frozen_stages(self.frozen_stages, self.num_stages)

    @property
    def built_stages(self) -> int:
        """How many stages are built: those up to the last requested output.

        Later stages would hold parameters that ``forward`` never uses, and DDP with mmengine's
        default ``find_unused_parameters=False`` fails on them ("Expected to have finished
        reduction in the prior iteration"); so a backbone never builds them (their weights in a
        checkpoint are reported as unexpected on load)."""
        return self.out_indices[-1] + 1

    def not_built_prefixes(self) -> Tuple[str, ...]:
        """State-dict prefixes of what the full network has and this one does not build: the
        stages after the last output and the output norms it has not built. A
        checkpoint's tensors there are dropped on load (reported, never an error). A backbone
        that has not declared its stages builds everything."""
        if not self.stage_channels:
            return ()
        late = tuple(f'stages.{i}.' for i in range(self.built_stages, self.num_stages))
        norms = tuple(f'out_norm{i}.' for i in range(self.num_stages)
                      if getattr(self, f'out_norm{i}', None) is None)
        return late + norms

    @staticmethod
    def check_frozen_stages(frozen_stages: int, num_stages: int) -> int:
        if _is_int(frozen_stages) and frozen_stages > num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} exceeds the {num_stages} stages '
                             f'(use -1..{num_stages})')
        if not _is_int(frozen_stages) or frozen_stages < -1:
            raise ValueError(f'frozen_stages must be an int in -1..{num_stages} (-1: nothing, '
                             f'0: the stem, k: the stem and stages 0..k-1), got '
                             f'{frozen_stages!r}')
        return int(frozen_stages)

    @staticmethod
    def normalize_out_indices(out_indices: Iterable[int], num_stages: int) -> Tuple[int, ...]:
        if _is_int(out_indices):
            out_indices = (out_indices,)
        if isinstance(out_indices, (str, bytes)) or \
                not isinstance(out_indices, collections.abc.Iterable):
            raise ValueError(f'out_indices must be an int or a sequence of ints (stage '
                             f'indices), got {out_indices!r}')
        out_indices = tuple(out_indices)
        result = []
        for i in out_indices:
            if not _is_int(i):
                raise ValueError(f'out_indices entries must be ints (stage indices 0..'
                                 f'{num_stages - 1} or negative), got {i!r} in {out_indices!r}')
            j = i + num_stages if i < 0 else i
            if not 0 <= j < num_stages:
                raise ValueError(f'out_indices entry {i} is out of range for {num_stages} '
                                 f'stages (valid: 0..{num_stages - 1} or negative)')
            result.append(int(j))
        if not result:
            raise ValueError('out_indices must name at least one stage')
        return tuple(sorted(set(result)))

    # ------------------------------------------------------------------------------ outputs
    def output_levels(self) -> List[Tuple[int, int]]:
        """(channels, stride) of each map ``forward`` returns, in order."""
        if not self.stage_channels:  # AttributeError: hasattr() (e.g. torch.jit) says False
            raise AttributeError(f'{type(self).__name__} has not declared its stages: call '
                                 'set_stages(channels, strides) in __init__')
        return [(self.stage_channels[i], self.stage_strides[i]) for i in self.out_indices]

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each output, in order (e.g. for a neck's ``in_channels``)."""
        return tuple(c for c, _ in self.output_levels())

    @property
    def out_strides(self) -> Tuple[int, ...]:
        """Stride of each output relative to the input, in order."""
        return tuple(s for _, s in self.output_levels())

    # ----------------------------------------------------------------------- input checking
    #: smallest H/W the network accepts
    min_input_size: int = 32

    def check_input(self, x: torch.Tensor) -> None:
        """Name what is wrong with an input that would otherwise fail deep inside a block
        (a reshape of an empty batch, a dtype mismatch in a conv) with a raw torch error."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'{type(self).__name__} expects an (N, C, H, W) tensor, got {shape}')
        if x.shape[0] == 0:
            raise ValueError(
                f'{type(self).__name__} got an empty batch (input shape {tuple(x.shape)}); pass '
                'at least one image (drop empty batches before the model, e.g. skip the '
                'iteration)')
        self._check_dtype(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects {self.in_channels} input channels but got '
                f'{x.shape[1]} (input shape {tuple(x.shape)}); set in_channels={x.shape[1]} or '
                'convert the images (e.g. grayscale -> RGB)')
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f'input {tuple(x.shape[-2:])} is too small for {type(self).__name__}: H and W '
                f'must be at least {self.min_input_size} pixels (total stride); resize or pad '
                'the image')

    def _check_dtype(self, x: torch.Tensor) -> None:
        """The input must be floating point and, outside autocast, of the weights' dtype."""
        if not x.is_floating_point():
            raise ValueError(
                f'{type(self).__name__} expects normalized floating-point images, got {x.dtype} '
                'input; convert and normalize it first (MMDet / MMSeg data preprocessors do: '
                'mean/std in data_preprocessor), e.g. (x.float() - mean) / std')
        weight = next(self.parameters(), None)
        if weight is None or x.dtype == weight.dtype or torch.is_autocast_enabled(
                x.device.type):
            return
        raise ValueError(
            f'{type(self).__name__} has {weight.dtype} weights but got {x.dtype} input; cast '
            f'the input (x.to({weight.dtype})), convert the model (model.to({x.dtype})), or '
            'run under torch.autocast for mixed precision')

    # -------------------------------------------------------------------- train-time behaviour
    #: run training forwards on CPU in channels_last memory format (same NCHW shapes and
    #: function; outputs are returned contiguous NCHW). Measured on one EPYC thread, batch 2 at
    #: 512x512 (docs/model_zoo.md, "Dense resolutions"): the training step 1.1-1.25x faster,
    #: from oneDNN's NHWC convolutions (depth-wise and 3x3, forward and backward) and NHWC
    #: average pooling. Set False to train in the default NCHW layout.
    train_channels_last: bool = True

    def training_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the training forward runs in (see
        ``train_channels_last``); unchanged in eval mode (each family's inference and deploy
        forms choose their own layout) and off the CPU (measured there only)."""
        if self.training and self.train_channels_last and x.device.type == 'cpu':
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def run_block(self, block: nn.Module, *args):
        """Run one block, with activation checkpointing when enabled and useful."""
        if self.with_cp and self.training and torch.is_grad_enabled() and \
                any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return cp.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def frozen_modules(self) -> List[nn.Module]:
        """Modules frozen by ``frozen_stages``: the stem, then stage by stage (+ their norms)."""
        if self.frozen_stages < 0:
            return []
        modules = [self.stem]
        for i in range(min(self.frozen_stages, len(self.stages))):
            modules.append(self.stages[i])
            modules.extend(self.stage_extras(i))
        return modules

    def stage_extras(self, index: int) -> List[nn.Module]:
        """Modules besides ``stages[index]`` that belong to it (e.g. its output norm)."""
        norm = getattr(self, f'out_norm{index}', None)
        return [norm] if norm is not None else []

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'MobileBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):  # SyncBatchNorm is a _BatchNorm too
                    m.eval()
        return self

    # --------------------------------------------------------------------- weights and deploy
    arch_name: Optional[str] = None

    def checkpoint_converter(self) -> Optional[LayoutConverter]:
        """The family's layout converter; None for a backbone that knows no other layout (it
        then loads only its own state dicts)."""
        return None

    def load_checkpoint(self, checkpoint: str) -> LoadReport:
        """Load an official / timm / mmpretrain / mmeff checkpoint (heads dropped)."""
        converter = self.checkpoint_converter()
        if converter is None:
            raise NotImplementedError(f'{type(self).__name__} has no checkpoint converter: '
                                      'implement checkpoint_converter() to load checkpoints')
        return load_pretrained(self, checkpoint, converter, prefix='backbone.',
                               arch_name=self.arch_name,
                               allowed_missing=self.dense_only_prefixes,
                               not_built=self.not_built_prefixes())

    def _convert_layout_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        """``load_state_dict`` pre-hook: a backbone of another layout under this module's prefix
        (``load_from=`` an official MMDet 2 / MMSeg 0.x checkpoint, a timm file, ...) is renamed
        to ours before loading, so the whole detector loads from it with equal weights."""
        converter = self.checkpoint_converter()
        if converter is not None:
            convert_under_prefix(state_dict, prefix, self, converter)

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            checkpoint = cfg.get('checkpoint')
            if not checkpoint:
                raise ValueError("init_cfg type 'Pretrained' needs checkpoint=PATH")
            self._init_fresh()
            self.load_checkpoint(checkpoint)
            self._is_init = True
            return
        if cfg is None:
            self._init_fresh()
            self._is_init = True
            return
        super().init_weights()

    def _init_fresh(self) -> None:
        """Family default initialisation (called before loading a checkpoint too)."""

    def switch_to_deploy(self, input_shape: Optional[Sequence[int]] = None) -> 'MobileBackbone':
        """Fold BNs and freeze biases in place (see :func:`mmeff.models.layers.fusion`)."""
        from mmeff.models.layers.fusion import fuse
        return fuse(self, input_shape)
