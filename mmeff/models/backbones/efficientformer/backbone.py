"""EfficientFormer (Li et al., NeurIPS 2022) as a dense-prediction backbone.

Paper §4 / Table 6: a conv stem (two 3x3 stride-2 Conv-BN-ReLU), four stages at strides
4/8/16/32 joined by 3x3 stride-2 Conv-BN embeddings, MB4D blocks everywhere except the last
``num_vit`` blocks of the network, which are MB3D (global MHSA) blocks after one reshape to
tokens. See :mod:`.efficientformer_blocks` for the blocks.

What this adds over the reference implementations (timm, the official repo, mmpretrain):
any input size (odd sizes give ceil-divided maps; the 7x7 attention-bias table is resized in
2-D offset space to the token grid that occurs, exact at 224x224), per-output GroupNorm(1, C)
norms named as in the official detection code (so its checkpoints map), ``frozen_stages``,
``norm_eval``, ``with_cp``, loading of every known checkpoint layout and a deploy mode.
"""
import math
from numbers import Integral
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from mmeff.models.backbones.efficientformer.checkpoint import EfficientFormerConverter
from mmeff.registry import MODELS
from mmeff.models.layers import contiguous_nchw, drop_path_rates
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.backbones.efficientformer.blocks import ConvStem, EfficientFormerStage, count_from_end
from mmeff.models.backbones.efficientformer.arch import ARCH_SETTINGS, validate_arch

@MODELS.register_module()
class EfficientFormer(MobileBackbone):
    """EfficientFormer L1/L3/L7 backbone returning NCHW maps at strides 4/8/16/32.

    Args:
        arch: 'l1', 'l3', 'l7', or a dict with ``widths`` (4 ints), ``depths`` (4 ints),
            ``num_vit`` (number of MB3D blocks counted from the end of the network) and
            optionally ``mlp_ratio`` (4) and ``pool_size`` (3). ``num_vit`` may exceed the
            last stage's depth: the MB3D blocks then also fill the tail of stage 3, whose
            tokens are viewed back as a map for its output and for stage 4's conv embedding
            (the official code only allows ``num_vit <= depths[3]``; the latency-driven
            search of §4.2 needs the general case).
        in_channels: input image channels.
        out_indices: stages to output (0..3, negative allowed).
        frozen_stages: -1: nothing; 0: the stem; k: the stem and stages 0..k-1 (with their
            output norms).
        norm_eval: keep BatchNorms (incl. SyncBN) in eval mode while training.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        layer_scale_init: initial layer-scale value (official: 1e-5; its L7 detector: 1e-6).
        with_cp: activation checkpointing per block (less memory, one more forward).
        with_out_norms: a GroupNorm(1, C) (LayerNorm over C, H, W) on each output, as in the
            official detection/segmentation backbone (``norm0/2/4/6`` there). Off for the
            classifier, whose head has its own LayerNorm.
        img_size: pretraining resolution (int or (H, W)); sets the attention-bias table to
            ``ceil(img_size / 32)`` (7x7 for 224). Other resolutions resize the table. The
            official detection (segmentation) checkpoints learned 25x25 (16x16) tables:
            ``img_size=800`` (512) loads them without resizing.
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=PATH)`` loads an
            official, timm, mmpretrain or mmeff checkpoint (classifier or detector).
    """

    arch_zoo = ARCH_SETTINGS
    arch_keys = ('widths', 'depths', 'num_vit')
    validate_arch = staticmethod(validate_arch)
    family = 'EfficientFormer'
    dense_only_prefixes = ('out_norm',)
    num_stages = 4

    def __init__(self, arch: Union[str, dict] = 'l1', in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, drop_path_rate: float = 0.0,
                 layer_scale_init: float = 1e-5, with_cp: bool = False,
                 with_out_norms: bool = True, img_size: Union[int, Sequence[int]] = 224,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, init_cfg,
                         in_channels=in_channels)
        # a dict with other mlp_ratio/pool_size than Table 6 is custom (arch_name None)
        self.arch_name, settings = self.resolve_arch(arch)
        self.arch_settings = settings
        self.widths: List[int] = settings['widths']
        self.depths: List[int] = settings['depths']
        self.num_vit: int = settings['num_vit']
        self.set_stages(self.widths, (4, 8, 16, 32))
        self.with_out_norms = with_out_norms
        self.table_size = self._table_size(img_size)

        self.stem = ConvStem(self.in_channels, self.widths[0])
        rates = drop_path_rates(drop_path_rate, self.depths)
        num_3d = count_from_end(self.depths, self.num_vit)
        self.stages = nn.ModuleList(
            EfficientFormerStage(self.widths[max(i - 1, 0)], self.widths[i], self.depths[i],
                                 num_3d[i], downsample=i > 0, mlp_ratio=settings['mlp_ratio'],
                                 pool_size=settings['pool_size'], drop_path=rates[i],
                                 layer_scale_init=layer_scale_init, table_size=self.table_size)
            for i in range(self.built_stages))
        if with_out_norms:
            for i in self.out_indices:
                self.add_module(f'out_norm{i}', nn.GroupNorm(1, self.widths[i]))
        self._init_fresh()
        self._freeze_stages()

    @staticmethod
    def _table_size(img_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
        size = (img_size, img_size) if isinstance(img_size, Integral) else tuple(img_size)
        if len(size) != 2 or not all(isinstance(s, Integral) and s >= 32 for s in size):
            raise ValueError(f'img_size must be an int or (H, W) of ints >= 32, got {img_size!r}')
        return (math.ceil(size[0] / 32), math.ceil(size[1] / 32))

    def _init_fresh(self) -> None:
        """The official initialisation: trunc-normal(0.02) linears and MLP 1x1 convs, zero
        biases; PyTorch defaults for the 3x3 convs; unit norms."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and '.mlp.' in name):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def checkpoint_converter(self) -> EfficientFormerConverter:
        return EfficientFormerConverter()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, C, H, W) -> one (N, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2))) map per output.

        Stages after the last requested output are not built (see ``built_stages``). Outputs are always contiguous
        NCHW, also when the fused model runs channels_last inside (mmcv's CPU ops expect NCHW)."""
        self.check_input(x)
        x = self.stem(self.training_layout(x))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x, self.run_block)
            if i in self.out_indices:
                norm = getattr(self, f'out_norm{i}', None)
                out = norm(x) if norm is not None else x
                outs.append(contiguous_nchw(out))
        return tuple(outs)
