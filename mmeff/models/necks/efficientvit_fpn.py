"""FPN for EfficientViT's stride-16/32/64 outputs, as the official downstream code built it.

What microsoft/Cream ``EfficientViT/downstream/efficientvit_fpn.py`` and its two configs did
(mmdet 2.x, EfficientViT-M4, ``in_channels=[128, 256, 384]``, ``out_channels=256``):
- an ordinary FPN on the three backbone levels (1x1 laterals, nearest top-down, 3x3 outputs;
  no norm, no activation);
- ``num_extra_trans_convs`` finer levels: a 2x2 stride-2 transposed conv on the finest lateral
  (after the top-down sum), repeated, each followed by its own 3x3 output conv;
- Mask R-CNN: ``num_extra_trans_convs=2, num_outs=5`` -> strides 4, 8, 16, 32, 64 (P2-P6);
- RetinaNet: ``num_extra_trans_convs=1, num_outs=5, add_extra_convs='on_input'`` (inherited
  from its base config) -> strides 8, 16, 32, 64 and one stride-2 3x3 conv on the stride-64
  backbone map: 128 (P3-P7).
Outputs are ordered finest first. Transposed-conv levels are exactly twice the size of the
level below, so for inputs not divisible by 64 they can be one pixel larger than image/stride;
MMDet takes feature sizes from the maps, so anchors and RoI pooling stay consistent.

The official checkpoints name each conv inside an mmcv ``ConvModule`` (``lateral_convs.0.conv.*``)
and keep RetinaNet's stride-2 extra conv as ``fpn_convs.{levels}``; loading renames them (a
load-state-dict pre-hook), so ``load_from`` a released detector fills this neck exactly.
"""
import re
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from mmeff.checkpoint import rename_key
from mmeff.registry import MODELS

_EXTRA_SOURCES = ('on_input', 'on_lateral', 'on_output')


@MODELS.register_module()
class EfficientViTFPN(BaseModule):
    """FPN with transposed-conv levels finer than the backbone's finest input.

    Args:
        in_channels: channels of each backbone output (e.g. ``[128, 256, 384]`` for M4).
        out_channels: channels of every pyramid level.
        num_outs: number of pyramid levels returned.
        start_level: first backbone level used.
        num_extra_trans_convs: finer levels made by 2x transposed convs (2 for Mask R-CNN's
            P2/P3, 1 for RetinaNet's P3).
        add_extra_convs: coarser levels beyond the backbone's: False (max-pool, as MMDet's
            FPN), True (= 'on_input') or 'on_input' / 'on_lateral' / 'on_output'.
        relu_before_extra_convs: ReLU before the second and later extra convs.
        upsample_cfg: ``F.interpolate`` arguments of the top-down path.
        init_cfg: Xavier-uniform for convs (MMDet's FPN default); transposed convs get
            Kaiming-normal (fan_out), as mmcv's ConvModule gave the official ones.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int,
                 start_level: int = 0, num_extra_trans_convs: int = 0,
                 add_extra_convs: Union[bool, str] = False, relu_before_extra_convs: bool = False,
                 upsample_cfg: Optional[dict] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        if init_cfg is None:
            init_cfg = dict(type='Xavier', layer='Conv2d', distribution='uniform')
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        if not in_channels or not 0 <= start_level < len(in_channels):
            raise ValueError(f'start_level={start_level} must index in_channels={in_channels}')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False,) + _EXTRA_SOURCES:
            raise ValueError(f'add_extra_convs must be False, True or one of {_EXTRA_SOURCES}, '
                             f'got {add_extra_convs!r}')
        used = len(in_channels) - start_level
        num_coarser = num_outs - used - num_extra_trans_convs
        if num_extra_trans_convs < 0 or num_coarser < 0:
            raise ValueError(
                f'num_outs={num_outs} is fewer than the {used} backbone levels used plus '
                f'num_extra_trans_convs={num_extra_trans_convs}; raise num_outs or start_level')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(mode='nearest') if upsample_cfg is None else dict(upsample_cfg)
        self.num_coarser = num_coarser

        self.lateral_convs = nn.ModuleList(
            nn.Conv2d(c, out_channels, 1) for c in in_channels[start_level:])
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(used))
        self.extra_trans_convs = nn.ModuleList(
            nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2)
            for _ in range(num_extra_trans_convs))
        self.extra_fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1)
            for _ in range(num_extra_trans_convs))
        self.extra_convs = nn.ModuleList()
        if add_extra_convs:
            for i in range(num_coarser):
                c_in = in_channels[-1] if i == 0 and add_extra_convs == 'on_input' \
                    else out_channels
                self.extra_convs.append(nn.Conv2d(c_in, out_channels, 3, stride=2, padding=1))
        for m in self.extra_trans_convs:
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(m.bias)
        self._register_load_state_dict_pre_hook(self._rename_official_keys)

    def _rename_official_keys(self, state_dict: dict, prefix: str, *args) -> None:
        """Official ``ConvModule`` names -> ours: drop the ``.conv`` level, and the official
        ``fpn_convs`` past the backbone levels are our ``extra_convs``."""
        used = len(self.fpn_convs)

        def fpn_conv(m: re.Match) -> str:
            i = int(m.group(1))
            return f'fpn_convs.{i}.' if i < used else f'extra_convs.{i - used}.'

        rules = [(r'^(lateral_convs|extra_trans_convs|extra_fpn_convs)\.(\d+)\.conv\.', r'\1.\2.'),
                 (r'^fpn_convs\.(\d+)\.conv\.', fpn_conv)]
        official = [k for k in state_dict if k.startswith(prefix) and
                    re.match(r'(lateral|fpn|extra_trans|extra_fpn)_convs\.\d+\.conv\.',
                             k[len(prefix):])]
        for key in official:
            state_dict[prefix + rename_key(key[len(prefix):], rules)] = state_dict.pop(key)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{type(self).__name__} expects {len(self.in_channels)} inputs '
                             f'(in_channels={self.in_channels}) but got {len(inputs)}; make the '
                             "backbone's out_indices/extra_levels match in_channels")
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]

        finer = []
        x = laterals[0]
        for up, conv in zip(self.extra_trans_convs, self.extra_fpn_convs):
            x = up(x)
            finer.insert(0, conv(x))

        if self.num_coarser and not self.add_extra_convs:
            for _ in range(self.num_coarser):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_coarser:
            source = {'on_input': inputs[-1], 'on_lateral': laterals[-1],
                      'on_output': outs[-1]}[self.add_extra_convs]
            outs.append(self.extra_convs[0](source))
            for conv in self.extra_convs[1:]:
                outs.append(conv(F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        return tuple(finer + outs)
