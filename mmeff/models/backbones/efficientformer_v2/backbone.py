"""EfficientFormerV2 (Li et al., ICCV 2023) as a dense-prediction backbone.

Four stages at strides 4/8/16/32. Stages 1-2 hold unified-FFN blocks only; the last
``num_attn`` blocks of stages 3 and 4 also hold global MHSA (stage 3 as *stride attention* on the
2x-downsampled map), and stage 4 is entered through *attention downsampling*. Settings are those
of the published models (timm 1.0.31 ``efficientformerv2_*`` = snap-research/EfficientFormer).

Any input size works (see :class:`EfficientFormerV2`); outputs are NCHW maps, one per
``out_indices`` entry, each through a BatchNorm output norm like the official classification
code's ``fork_feat`` mode (``with_out_norms=False`` gives the raw stage outputs that the official
``detection/backbonev2.py`` returned, with its norms commented out, and that classification needs).
"""
import numbers
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmeff.models.backbones.efficientformer_v2.checkpoint import EfficientFormerV2Converter
from mmeff.checkpoint.loader import CONVERTERS, LayoutConverter
from mmeff.registry import MODELS
from mmeff.models.layers import contiguous_nchw, drop_path_rates
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.backbones.efficientformer_v2.blocks import (Downsample, EfficientFormerV2Block,
                                        EfficientFormerV2Stage, Stem, ceil_div)
from mmeff.models.backbones.efficientformer_v2.arch import ARCH_SETTINGS, ARCH_KEYS, validate_arch

@MODELS.register_module()
class EfficientFormerV2(MobileBackbone):
    """EfficientFormerV2 backbone for MMDetection / MMSegmentation.

    Any input size is accepted (H, W >= 32). Every down-sampling (stem, stage entries, stride
    attention's strided conv, attention downsampling's queries) is a padded 3x3 stride-2 conv or a
    stride-2 sampling, so each stage's map is ceil(H/s) x ceil(W/s), s = 4, 8, 16, 32 - no padding
    of the input. Stride attention upsamples its output 2x bilinearly (as trained) and crops the
    one surplus row/column that appears when the stride-16 map has an odd side: the official dense
    code fails on such inputs (issue #50), e.g. 512x680 or 225x337. The attention position biases
    are learned over 2-D offsets on the 224x224 grids (7x7, and 14x14 for attention downsampling);
    for the grid that occurs the offset table is resized bicubically and gathered (exact at 224,
    cached per size in eval mode, see :class:`AttentionBias2d`).

    Stages after the last ``out_indices`` entry are not built (``built_stages``), so every
    parameter gets a gradient (DDP-safe); their weights in a checkpoint are reported as
    unexpected on load.

    In eval mode the forward runs in channels_last memory format (depth-wise convolutions are
    many times faster so on CPU; set ``eval_channels_last = False`` to disable), in train mode
    too on CPU (``train_channels_last``, see MobileBackbone), and returns ordinary contiguous
    NCHW tensors.

    Args:
        arch: 's0', 's1', 's2', 'l' or a dict with keys ``widths`` (4), ``depths`` (4),
            ``mlp_ratios`` (a number, or per stage a number or one per block) and ``num_attn``
            (attention blocks at the end of stages 3 and 4).
        in_channels: input channels.
        out_indices: stages to output (0..3, negatives allowed).
        frozen_stages: -1 none; 0 the stem; k the stem and stages 0..k-1 (+ their output norms).
        norm_eval: keep all BatchNorms (also SyncBatchNorm) in eval mode while training.
        drop_path_rate: stochastic depth, increasing linearly over all blocks. The published
            ImageNet models used 0 / 0 / 0.02 / 0.1 (s0/s1/s2/l).
        layer_scale_init: initial layer-scale value (None: no layer scale).
        with_cp: activation checkpointing of every block and of attention downsampling.
        with_out_norms: a BatchNorm on each output (dense prediction); False for classification.
        img_size: pretraining resolution, which sets the attention-bias table sizes (int or
            (H, W)); keep 224 to load the published weights exactly.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an official release, a timm
            state dict or an mmeff checkpoint (classification head dropped).
    """

    arch_zoo = ARCH_SETTINGS
    arch_keys = ARCH_KEYS
    validate_arch = staticmethod(validate_arch)
    family = 'EfficientFormerV2'
    dense_only_prefixes = ('out_norm',)
    #: run eval-mode forwards in channels_last memory format (faster depth-wise convs)
    eval_channels_last: bool = True
    #: the block class (mmeff.search's slimmable supernet builds elastic blocks through it)
    block_cls = EfficientFormerV2Block

    def __init__(self,
                 arch: Union[str, dict] = 's0',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 drop_path_rate: float = 0.0,
                 layer_scale_init: Optional[float] = 1e-5,
                 with_cp: bool = False,
                 with_out_norms: bool = True,
                 img_size: Union[int, Sequence[int]] = 224,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         in_channels=in_channels)
        self.arch_name, settings = self.resolve_arch(arch)
        self.arch_settings = settings
        self.widths: Tuple[int, ...] = settings['widths']
        self.depths: Tuple[int, ...] = settings['depths']
        self.set_stages(self.widths, (4, 8, 16, 32))
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.img_size = self._check_img_size(img_size)
        self.with_out_norms = with_out_norms

        self.stem = Stem(self.in_channels, self.widths[0])
        self.stages = self._build_stages(settings, drop_path_rate, layer_scale_init)
        if with_out_norms:
            for i in self.out_indices:
                self.add_module(f'out_norm{i}', nn.BatchNorm2d(self.widths[i]))
        self._init_fresh()
        self._freeze_stages()

    def _check_img_size(self, img_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
        if isinstance(img_size, numbers.Integral):
            img_size = (int(img_size), int(img_size))
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 2 or min(img_size) < self.min_input_size:
            raise ValueError(f'img_size must be an int or (H, W) of at least '
                             f'{self.min_input_size}, got {img_size}')
        return img_size

    def _build_stages(self, settings: dict, drop_path_rate: float,
                      layer_scale_init: Optional[float]) -> nn.ModuleList:
        """Stage i: its entry (Identity, a strided conv, or for stage 4 attention downsampling
        too) and its blocks, attention in the last ``num_attn`` blocks of stages 3 and 4."""
        widths, depths = self.widths, self.depths
        grid16 = tuple(ceil_div(s, 16) for s in self.img_size)  # attention downsampling's keys
        grid32 = tuple(ceil_div(s, 32) for s in self.img_size)  # every other attention grid
        rates = drop_path_rates(drop_path_rate, depths)
        stages = []
        for i, depth in enumerate(depths[:self.built_stages]):
            downsample = nn.Identity() if i == 0 else Downsample(
                widths[i - 1], widths[i], use_attn=i == 3, table_size=grid16)
            blocks = [
                self.block_cls(
                    widths[i], mlp_ratio=settings['mlp_ratios'][i][j],
                    use_attn=self.holds_attention(i, j),
                    stride=2 if i == 2 else None, table_size=grid32, drop_path=rates[i][j],
                    layer_scale_init=layer_scale_init) for j in range(depth)
            ]
            stages.append(EfficientFormerV2Stage(downsample, blocks))
        return nn.ModuleList(stages)

    def holds_attention(self, stage: int, index: int) -> bool:
        """Whether block ``index`` of ``stage`` has the MHSA token mixer: the last ``num_attn``
        blocks of stages 3 and 4 (the supernet also builds it where a shallower subnet has it)."""
        return stage >= 2 and index >= self.depths[stage] - self.arch_settings['num_attn']

    # ----------------------------------------------------------------------------- forward
    def stage_blocks(self, stage: int) -> Sequence[nn.Module]:
        """The blocks ``forward`` runs in ``stage`` (a supernet's subnet runs the first ones)."""
        return self.stages[stage].blocks

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        channels_last = self.eval_channels_last and not self.training
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.training_layout(x)
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if not isinstance(stage.downsample, nn.Identity):
                x = self.run_block(stage.downsample, x)
            for block in self.stage_blocks(i):
                x = self.run_block(block, x)
            if i in self.out_indices:
                out = getattr(self, f'out_norm{i}')(x) if self.with_out_norms else x
                outs.append(contiguous_nchw(out))
        return tuple(outs)

    # ------------------------------------------------------------------------------ weights
    def checkpoint_converter(self) -> LayoutConverter:
        return CONVERTERS.get(self.family) or EfficientFormerV2Converter()

    def _init_fresh(self) -> None:
        """The official initialisation: truncated-normal (std 0.02) FFN 1x1 convs, zero biases;
        attention-bias tables start at zero, layer scales at ``layer_scale_init``."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and '.mlp.' in f'.{name}':
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
