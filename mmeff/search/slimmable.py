"""Switchable layers of the slimmable EfficientFormerV2 supernet (Yu et al., "Slimmable neural
networks"; the V2 paper §2.2).

A switchable layer holds the weights of its widest form; a narrower form uses the *first* c
filters / input channels of the same weights (``w[:c_out, :c_in]``), so all widths share
weights. Input widths are read from the input tensor, output widths from the active
normalisation layer: a :class:`SwitchableBatchNorm2d` keeps one independent BatchNorm per width
configuration (the statistics and affine parameters of a narrow net differ from a wide one's)
and the supernet selects which one is active. Each replaces a module of the standalone blocks
*in place* (same attribute, same parameter names up to the BN key), so the blocks' own
``forward`` methods run unchanged on the sliced weights.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.layers import ConvBN, LayerScale


def norm_key(*dims: int) -> str:
    """The name of a BatchNorm in a :class:`SwitchableBatchNorm2d`: the widths it serves."""
    return '_'.join(str(int(d)) for d in dims)


def sliced_conv(conv: nn.Conv2d, x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """``conv`` restricted to the first ``x.shape[1]`` input and ``out_channels`` output
    channels (a depth-wise conv to the first ``x.shape[1]`` channels, whatever
    ``out_channels``). At full width the parameters themselves are used (no copy)."""
    c_in = x.shape[1]
    weight, bias = conv.weight, conv.bias
    if conv.groups == 1:
        groups = 1
        if (out_channels, c_in) != tuple(weight.shape[:2]):
            weight = weight[:out_channels, :c_in].contiguous()
    elif conv.groups == conv.in_channels == conv.out_channels:
        groups = out_channels = c_in
        if c_in != weight.shape[0]:
            weight = weight[:c_in]
    else:
        raise ValueError(f'only dense and depth-wise convs are slimmable, got groups='
                         f'{conv.groups} for {conv.in_channels} channels')
    if bias is not None and out_channels != bias.shape[0]:
        bias = bias[:out_channels]
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, groups)


class SwitchableBatchNorm2d(nn.ModuleDict):
    """Independent BatchNorm2d layers, one per width configuration, named by
    :func:`norm_key`; ``active`` names the one the forward uses (set by the supernet)."""

    def __init__(self):
        super().__init__()
        self.active: Optional[str] = None

    def ensure(self, key: str, channels: int) -> None:
        """Create the BatchNorm for ``key`` (``channels`` wide) unless it exists."""
        if key not in self:
            self[key] = nn.BatchNorm2d(channels)
        elif self[key].num_features != channels:
            raise RuntimeError(f'switchable norm {key!r} has {self[key].num_features} '
                               f'channels, asked for {channels}')

    def current(self) -> nn.BatchNorm2d:
        if self.active not in self:
            raise RuntimeError(f'no active BatchNorm (active={self.active!r}, have '
                               f'{list(self.keys())}): call set_subnet on the supernet first')
        return self[self.active]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.current()(x)


class SlimConvBN(nn.Module):
    """A :class:`ConvBN` whose conv is sliced to the input's channels and to the active
    BatchNorm's width (``conv.*`` keeps the standalone names, ``bn.<key>.*`` per width)."""

    def __init__(self, convbn: ConvBN):
        super().__init__()
        self.conv = convbn.conv
        self.bn = SwitchableBatchNorm2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn.current()
        return bn(sliced_conv(self.conv, x, bn.num_features))


class SlimConv2d(nn.Conv2d):
    """A depth-wise conv without norm (attention downsampling's query conv), sliced to the
    input's channels."""

    @classmethod
    def sharing(cls, conv: nn.Conv2d) -> 'SlimConv2d':
        """The slimmable conv over ``conv``'s own parameters."""
        slim = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                   conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                   device='meta')
        slim.weight, slim.bias = conv.weight, conv.bias
        return slim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sliced_conv(self, x, x.shape[1])


class SlimLayerScale(LayerScale):
    """Channels-first layer scale sliced to the input's channels."""

    @classmethod
    def sharing(cls, scale: LayerScale) -> 'SlimLayerScale':
        slim = cls(scale.gamma.shape[0], channels_first=True)
        slim.gamma = scale.gamma
        return slim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma
        if x.shape[1] != gamma.shape[0]:
            gamma = gamma[:x.shape[1]]
        return x * gamma[:, None, None]


def make_slimmable(module: nn.Module) -> None:
    """Replace, in place, every ConvBN, channels-first LayerScale and depth-wise conv without
    norm under ``module`` by its slimmable form over the same parameters."""
    for name, child in list(module.named_children()):
        if isinstance(child, ConvBN):
            setattr(module, name, SlimConvBN(child))
        elif isinstance(child, LayerScale) and not isinstance(child, SlimLayerScale):
            if not child.channels_first:
                raise ValueError(f'{name}: only channels-first layer scales are slimmable')
            setattr(module, name, SlimLayerScale.sharing(child))
        elif type(child) is nn.Conv2d:
            if child.groups == 1 or child.groups != child.in_channels:
                continue  # dense convs without norm (talking heads) keep their width
            setattr(module, name, SlimConv2d.sharing(child))
        else:
            make_slimmable(child)
