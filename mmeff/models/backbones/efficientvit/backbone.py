"""EfficientViT (Microsoft, CVPR 2023; M0-M5) as an OpenMMLab dense-prediction backbone.

Not MIT's EfficientViT of the same name. Widths/depths/heads follow the paper's Table 1; the
q depth-wise kernels per head are those of the released classification models (timm
1.0.31 ``efficientvit_m*`` and microsoft/Cream ``classification/model/build.py``). The
official *downstream* code used ``(7, 5, 3, 3)`` for M0 as well, which does not match the
M0 classification checkpoint; mmeff refuses such a mix instead of silently skipping tensors.

Outputs and FPNs. The native feature maps have strides 16/32/64 (``out_indices`` 0/1/2). A
standard FPN wants stride 4/8 too; two documented ways:
- ``extra_levels=(4, 8)`` prepends the patch-embedding activations at those strides (after
  ReLU; ``C1/4`` and ``C1/2`` channels) to the outputs, so MMDet's ``FPN`` with
  ``in_channels=list(backbone.out_channels)`` (MMDet's FPN wants a list, ``out_channels`` is a
  tuple) gives P2-P6 (Mask R-CNN) or, with the stock ``start_level=1`` and
  ``add_extra_convs='on_input'``, P3-P7 (RetinaNet; ``(8,)`` with ``start_level=1`` would give
  strides 16-256, which the build check in ``mmeff.engine.pyramid`` refuses);
- or keep the three native levels and use :class:`mmeff.EfficientViTFPN`, which is what the
  official downstream code did (transposed-conv levels for /4 and /8).

Any input size works. Window attention pads to whole windows; the attention-bias rule: every
attention keeps its offset table at the pretraining size, i.e. the window it saw at
``img_size`` (7x7, except the 224 model's stage 3 whose 4x4 map clips the window to 4x4), and
:class:`~mmeff.models.layers.AttentionBias2d` resizes that table in offset space to the window
that occurs at run time (``min(window_size, H) x min(window_size, W)``). At 224x224 nothing is
resized and the model equals timm's to float rounding. (The official detection code instead
built 7x7 tables everywhere and resized the stage-3 checkpoint table once at load time; its
checkpoints load here, their 7x7 tables resized back to 4x4.)

Fine-tuning: the official recipes exclude the bias tables from weight decay; in mmengine,
``paramwise_cfg=dict(custom_keys={'attention_bias': dict(decay_mult=0.)})``. The official
detection code always kept every BN in eval mode and froze the patch embedding: here that is
``norm_eval=True, frozen_stages=0``.
Deployment: ``mmeff.models.layers.fusion(model)`` folds every BN, turns each attention into its
token-layout deploy form and runs the stem channels-last on CPU; outputs stay NCHW.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmeff.models.backbones.efficientvit.checkpoint import EfficientViTConverter
from mmeff.checkpoint.loader import ArchMismatchError, LoadReport
from mmeff.registry import MODELS
from mmeff.models.layers import contiguous_nchw, drop_path_rates
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.backbones.efficientvit.blocks import (EfficientViTStage, PatchEmbed16, SandwichBlock,
                                  SubsampleBlock)
from mmeff.models.backbones.efficientvit.arch import EFFICIENTVIT_ARCHS, validate_arch

def _conv_out(size: int, times: int) -> int:
    """Spatial size after ``times`` stride-2 3x3 convs with padding 1."""
    for _ in range(times):
        size = (size - 1) // 2 + 1
    return size


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f'img_size must be an int or (H, W), got {value!r}')
    return int(value[0]), int(value[1])


@MODELS.register_module()
class EfficientViT(MobileBackbone):
    """EfficientViT M0-M5 backbone (cascaded group attention, sandwich layout).

    Args:
        arch: 'm0'..'m5' or a dict with ``embed_dims``, ``depths``, ``num_heads``, ``kernels``
            (per stage, per stage, per stage, per head) and optionally ``key_dim`` (16).
        in_channels: input image channels.
        out_indices: stages to output (0, 1, 2 -> strides 16, 32, 64); stages after the last
            one are not built (every parameter gets a gradient: DDP-safe).
        frozen_stages: -1 none, 0 the patch embedding, k also stages 0..k-1.
        norm_eval: keep all BatchNorms in eval mode during training.
        drop_path_rate: stochastic depth, linear over the blocks (a stage's subsample block
            counts as one block).
        with_cp: activation checkpointing per block.
        window_size: attention window (int or one per stage); 7 in all official models.
        img_size: pretraining resolution (int or (H, W)); sets the bias-table sizes only.
        extra_levels: patch-embedding strides (from 2, 4, 8) whose activations are prepended
            to the outputs, finest first; e.g. ``(4, 8)`` for an FPN with P2.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an official release,
            timm or mmeff checkpoint (classifier or detector).

    Attributes:
        out_channels / out_strides: channels and strides of the returned maps, in order
            (tuples; the extra levels first).
    """

    family = 'EfficientViT'
    arch_zoo = EFFICIENTVIT_ARCHS
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'kernels')
    validate_arch = staticmethod(validate_arch)
    min_input_size = 16

    def __init__(self, arch: Union[str, dict] = 'm0', in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2), frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0, with_cp: bool = False,
                 window_size: Union[int, Sequence[int]] = 7,
                 img_size: Union[int, Sequence[int]] = 224, extra_levels: Sequence[int] = (),
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         in_channels=in_channels)
        # a dict with another key_dim than the released models is custom (arch_name None)
        self.arch_name, settings = self.resolve_arch(arch)
        self.arch_settings = settings
        dims, depths = settings['embed_dims'], settings['depths']
        num_stages = len(dims)
        self.set_stages(dims, [16 * 2 ** i for i in range(num_stages)])
        windows = self._per_stage(window_size, num_stages, 'window_size')
        self.extra_levels = self._check_extra_levels(extra_levels)

        self.stem = PatchEmbed16(self.in_channels, dims[0])
        img_h, img_w = _pair(img_size)
        block_dpr = drop_path_rates(drop_path_rate,
                                    [d + (i > 0) for i, d in enumerate(depths)])
        stages = []
        for i in range(self.built_stages):
            res = (_conv_out(img_h, 4 + i), _conv_out(img_w, 4 + i))
            table = (min(windows[i], res[0]), min(windows[i], res[1]))
            dpr = block_dpr[i]
            down = SubsampleBlock(dims[i - 1], dims[i], dpr.pop(0)) if i > 0 else None
            blocks = [SandwichBlock(dims[i], settings['key_dim'], settings['num_heads'][i],
                                    windows[i], table, settings['kernels'], r) for r in dpr]
            stages.append(EfficientViTStage(down, blocks))
        self.stages = nn.ModuleList(stages)
        self._freeze_stages()

    def output_levels(self) -> List[Tuple[int, int]]:
        """The patch-embedding levels of ``extra_levels`` first, then the stages."""
        return [(self.stem.channels[s], s) for s in self.extra_levels] + \
            super().output_levels()

    # ------------------------------------------------------------------ argument checking
    @staticmethod
    def _per_stage(value: Union[int, Sequence[int]], n: int, name: str) -> Tuple[int, ...]:
        values = (value,) * n if isinstance(value, int) else tuple(value)
        if len(values) != n or min(values) < 1:
            raise ValueError(f'{name} must be a positive int or {n} positive ints, got {value!r}')
        return values

    @staticmethod
    def _check_extra_levels(levels: Sequence[int]) -> Tuple[int, ...]:
        levels = tuple(sorted(set(int(s) for s in levels)))
        bad = [s for s in levels if s not in (2, 4, 8)]
        if bad:
            raise ValueError(f'extra_levels {bad} are not patch-embedding strides; choose from '
                             '(2, 4, 8), e.g. extra_levels=(4, 8) for an FPN with P2')
        return levels

    # --------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        x, outs = self.stem(self.training_layout(x), self.extra_levels)
        for i, stage in enumerate(self.stages):
            if stage.downsample is not None:
                x = self.run_block(stage.downsample, x)
            for block in stage.blocks:
                x = self.run_block(block, x)
            if i in self.out_indices:
                outs.append(x)
        # standard NCHW maps whatever layout the (deployed) layers used; no-op otherwise
        return tuple(contiguous_nchw(o) for o in outs)

    def checkpoint_converter(self) -> EfficientViTConverter:
        return EfficientViTConverter()

    def load_checkpoint(self, checkpoint: str) -> LoadReport:
        """Load a checkpoint; q-kernel mismatches fail with a hint instead of being skipped."""
        try:
            return super().load_checkpoint(checkpoint)
        except ArchMismatchError as err:
            if '.attn.dws.' not in str(err):
                raise
            raise ArchMismatchError(
                f'{err} The q depth-wise kernels differ: the official downstream EfficientViT '
                "code built M0 with kernels (7, 5, 3, 3) but its classification checkpoint "
                'uses (5, 5, 5, 5). Build the backbone with the kernels of the checkpoint, e.g. '
                "arch=dict(embed_dims=..., depths=..., num_heads=..., kernels=(7, 5, 3, 3)).") \
                from err
