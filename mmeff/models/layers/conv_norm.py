"""Conv/Linear + BatchNorm pairs that know how to fold themselves for deployment.

Folding BN into the neighbouring linear op is the main deploy-time saving the papers rely on
(EfficientFormer Observation 3: CONV-BN beats LN-Linear because BN disappears at inference).
"""
import copy
from typing import Optional, Union

import torch
from torch import nn

from mmeff.models.layers.pointwise import PointwiseConv2d, is_pointwise


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm):
    """Per-channel (scale, shift) such that ``bn(x) == x * scale + shift`` in eval mode."""
    std = (bn.running_var + bn.eps).sqrt()
    weight = bn.weight if bn.affine else torch.ones_like(std)
    bias = bn.bias if bn.affine else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """Return a new conv equal to ``bn(conv(x))`` (BN in eval mode)."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(conv_bias * scale + shift)
    return fused


@torch.no_grad()
def fuse_linear_bn(linear: nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> nn.Linear:
    """Return a linear equal to ``bn(linear(x))`` (BN over the output features)."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True).to(
        linear.weight.device, linear.weight.dtype)
    fused.weight.copy_(linear.weight * scale[:, None])
    lin_bias = linear.bias if linear.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(lin_bias * scale + shift)
    return fused


@torch.no_grad()
def fuse_bn_linear(bn: nn.modules.batchnorm._BatchNorm, linear: nn.Linear) -> nn.Linear:
    """Return a linear equal to ``linear(bn(x))`` (BN over the input features)."""
    scale, shift = _bn_scale_shift(bn)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True).to(
        linear.weight.device, linear.weight.dtype)
    fused.weight.copy_(linear.weight * scale[None, :])
    lin_bias = linear.bias if linear.bias is not None else torch.zeros(
        linear.out_features, device=shift.device, dtype=shift.dtype)
    fused.bias.copy_(lin_bias + linear.weight @ shift)
    return fused


def scaled_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` times a per-channel ``scale`` (a layer scale), computed as one BatchNorm whose
    affine is multiplied by the scale: the same function with one pass fewer over the map
    forward and two fewer backward (no separate multiply, no reduction for the scale's
    gradient). Any ``_BatchNorm`` (SyncBatchNorm too) runs its own forward, with its own
    running-statistics update, on the scaled affine; one without affine gets the multiply."""
    if not bn.affine:
        return bn(x) * scale.reshape((1, -1) + (1,) * (x.dim() - 2))
    return torch.func.functional_call(
        bn, {'weight': bn.weight * scale, 'bias': bn.bias * scale}, (x,))


def scaled_output(layer: nn.Module, x: torch.Tensor,
                  out_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """``layer(x)``, times ``out_scale`` per channel if given, inside the BN of a
    :class:`ConvBN` (a block's branch end: still a ConvBN in training, a plain conv once
    fused, when blocks pass no scale)."""
    return layer(x) if out_scale is None else layer(x, out_scale)


class ConvBN(nn.Sequential):
    """``Conv2d`` followed by ``BatchNorm2d``; ``fuse()`` returns the equivalent single conv.

    Submodules are named ``conv`` and ``bn`` (timm's naming), which keeps checkpoint
    conversion a matter of renaming prefixes. A 1x1 stride-1 conv is a
    :class:`~mmeff.models.layers.pointwise.PointwiseConv2d` (oneDNN on CPU channels-last maps,
    where aten's own choice is slower for small training batches).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: Optional[int] = None, groups: int = 1,
                 bias: bool = False, bn_weight_init: float = 1.0):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        if is_pointwise(kernel_size, stride, padding, groups):
            conv = PointwiseConv2d(in_channels, out_channels, bias=bias)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                             groups=groups, bias=bias)
        self.add_module('conv', conv)
        self.add_module('bn', nn.BatchNorm2d(out_channels))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor, out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``bn(conv(x))``, times ``out_scale`` per channel if given (see
        :func:`scaled_batch_norm`: how a block folds its layer scale into the BN in training)."""
        if isinstance(self.conv, PointwiseConv2d):
            x = self.conv(x, bias_grad_is_zero=self.normalizes_with_batch_statistics())
        else:
            x = self.conv(x)
        return self.bn(x) if out_scale is None else scaled_batch_norm(self.bn, x, out_scale)

    def normalizes_with_batch_statistics(self) -> bool:
        """Whether ``bn`` normalises by the statistics of the batch it sees (train mode or no
        running statistics), so that the output does not depend on the conv's bias and the
        bias's gradient is exactly zero. Plain ``BatchNorm2d`` only: SyncBatchNorm's
        statistics span every process, where only the sum over processes is zero."""
        bn = self.bn
        return type(bn) is nn.BatchNorm2d and (bn.training or bn.running_mean is None)

    def fuse(self) -> nn.Conv2d:
        return fuse_conv_bn(self.conv, self.bn)


class LinearBN(nn.Sequential):
    """``Linear`` followed by ``BatchNorm1d`` over features, for (B, N, C) token tensors."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module('linear', nn.Linear(in_features, out_features, bias=bias))
        self.add_module('bn', nn.BatchNorm1d(out_features))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, -2)).reshape_as(x) if x.dim() > 2 else self.bn(x)

    def fuse(self) -> nn.Linear:
        return fuse_linear_bn(self.linear, self.bn)


class BNLinear(nn.Sequential):
    """``BatchNorm1d`` followed by ``Linear`` (classification heads); fuses into one Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 std: float = 0.02):
        super().__init__()
        self.add_module('bn', nn.BatchNorm1d(in_features))
        self.add_module('linear', nn.Linear(in_features, out_features, bias=bias))
        nn.init.trunc_normal_(self.linear.weight, std=std)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def fuse(self) -> nn.Linear:
        return fuse_bn_linear(self.bn, self.linear)


Fusable = Union[ConvBN, LinearBN, BNLinear]


def folded(module: nn.Module) -> nn.Module:
    """The single conv/linear equal to a fusable pair, safe to modify.

    ``mmeff.models.layers.fusion`` folds children before their parent, so a parent's own ``fuse()``
    may find a pair already folded; then a copy is returned (never the live child).
    """
    fuse = getattr(module, 'fuse', None)
    return fuse() if callable(fuse) else copy.deepcopy(module)


@torch.no_grad()
def conv1x1_to_linear(conv: nn.Conv2d) -> nn.Linear:
    """The ``nn.Linear`` that applies a 1x1 conv to the channels-last (..., C) view."""
    linear = nn.Linear(conv.in_channels, conv.out_channels).to(conv.weight)
    linear.weight.copy_(conv.weight.flatten(1))
    if conv.bias is None:
        linear.bias.zero_()
    else:
        linear.bias.copy_(conv.bias)
    return linear


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (dim 1): an eval-mode BatchNorm with nothing to fold
    into (a dense output norm, a classifier's norm on pooled (B, C) features)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        scale, shift = _bn_scale_shift(bn)
        self.register_buffer('scale', scale.detach().clone())
        self.register_buffer('shift', shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)
