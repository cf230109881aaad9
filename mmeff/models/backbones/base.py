"""The contract every mmeff backbone follows (docs/design.md, "The backbone contract").

A family subclass builds ``self.stem`` (stride-4 or stride-16 patch embedding), ``self.stages``
(an ``nn.ModuleList``; stage i includes the downsampling that enters it) and the per-output
norms, and implements ``forward``. This base class supplies what must behave the same in all
families, the way MMDet's ResNet does it: arch lookup with a clear error, ``out_indices``
validation, ``frozen_stages``, ``norm_eval`` (also after SyncBN conversion), activation
checkpointing, input validation, ``init_cfg`` checkpoint loading of every supported layout,
and ``switch_to_deploy``.
"""
import copy
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmeff.checkpoint.loader import LayoutConverter, LoadReport, load_pretrained


def _as_tuples(value):
    """Lists and tuples compare equal (configs turn tuples into lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


class MobileBackbone(BaseModule):
    """Base class of the EfficientFormer, EfficientFormerV2 and EfficientViT backbones.

    Args:
        out_indices: which stages to output (negative indices allowed).
        frozen_stages: stages to freeze (their parameters get no gradient and their norms stay
            in eval mode). -1 freezes nothing, 0 the stem only, k the stem and stages 0..k-1.
        norm_eval: keep every BatchNorm (including SyncBatchNorm) in eval mode when training.
        with_cp: activation checkpointing of the blocks (saves memory, costs recompute).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` accepts
            any layout the family's converter knows.
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
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self._raw_out_indices = out_indices

    # ----------------------------------------------------------------- configuration helpers
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> Tuple[Optional[str], dict]:
        """Return (arch name or None, arch settings) with clear errors for bad input."""
        if isinstance(arch, str):
            name = arch.lower()
            if name not in cls.arch_zoo:
                raise ValueError(f'unknown {cls.family} arch {arch!r}; valid names are '
                                 f'{sorted(cls.arch_zoo)}, or pass a dict with keys '
                                 f'{list(cls.arch_keys)}')
            return name, copy.deepcopy(cls.arch_zoo[name])
        if isinstance(arch, dict):
            missing = [k for k in cls.arch_keys if k not in arch]
            if missing:
                raise ValueError(f'custom {cls.family} arch dict lacks keys {missing}; '
                                 f'required keys are {list(cls.arch_keys)}')
            settings = copy.deepcopy(dict(arch))
            for name, known in cls.arch_zoo.items():
                if all(_as_tuples(settings.get(k)) == _as_tuples(known.get(k))
                       for k in cls.arch_keys):
                    return name, settings
            return None, settings
        raise TypeError(f'arch must be a name {sorted(cls.arch_zoo)} or a dict, '
                        f'got {type(arch).__name__}')

    @staticmethod
    def normalize_out_indices(out_indices: Iterable[int], num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        result = []
        for i in out_indices:
            j = i + num_stages if i < 0 else i
            if not 0 <= j < num_stages:
                raise ValueError(f'out_indices entry {i} is out of range for {num_stages} '
                                 f'stages (valid: 0..{num_stages - 1} or negative)')
            result.append(j)
        if not result:
            raise ValueError('out_indices must name at least one stage')
        return tuple(sorted(set(result)))

    # ----------------------------------------------------------------------- input checking
    in_channels: int = 3
    #: smallest H/W the network accepts
    min_input_size: int = 32

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'{type(self).__name__} expects an (N, C, H, W) tensor, got {shape}')
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

    # -------------------------------------------------------------------- train-time behaviour
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

    def checkpoint_converter(self) -> LayoutConverter:
        raise NotImplementedError

    def load_checkpoint(self, checkpoint: str) -> LoadReport:
        """Load an official / timm / mmpretrain / mmeff checkpoint (heads dropped)."""
        return load_pretrained(self, checkpoint, self.checkpoint_converter(), prefix='backbone.',
                               arch_name=self.arch_name,
                               allowed_missing=self.dense_only_prefixes)

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
