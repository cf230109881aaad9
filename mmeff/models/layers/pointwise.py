"""1x1 convolutions for CPU training on channels-last maps: oneDNN or GEMMs, not aten's pick.

Why: aten picks the backend of a convolution by a heuristic written for NCHW inference; a
stride-1 1x1 convolution with a batch under 16 on one thread goes to its THNN path
(``_slow_conv2d``: a GEMM per image after a zero fill of the weight gradient, plus a copy
when the input is channels-last), forward and backward. Dense training runs exactly that
case (batch 2, 1x1 MLP / FFN / attention convolutions on channels-last maps;
:attr:`MobileBackbone.train_channels_last`). :class:`PointwiseConv2d` computes the same
three products on faster kernels: the output and the input gradient as oneDNN 1x1
convolutions on large maps (the gradient one with the transposed weight) or as one GEMM on
the NHWC rows of small maps (where oneDNN's per-call cost dominates), the weight gradient as
one GEMM over every pixel of the batch (NHWC views, no copy), the bias gradient as a column
sum. Forward + backward, 1 thread, AMD EPYC (Zen 4): 1.06-1.5x on EfficientFormer-L1's MLP
shapes at 2x512x512, 1.1-1.3x on EfficientViT-M4's small stage-3/4 maps
(``python tools/benchmarks/pointwise_conv.py``).

It takes this path only where it is the same function on a faster kernel: CPU, float32,
a channels-last 4-D input, no autocast, and not while a graph is recorded (export,
scripting, ``torch.compile``); everywhere else it is an ``nn.Conv2d``, with the same
parameters, state-dict keys and hooks.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from mmeff.models.layers.graph_mode import is_graph_export


def _autocast_on() -> bool:
    return torch.is_autocast_enabled('cpu')


#: maps of more pixels (batch x height x width) than this run their convolutions through
#: oneDNN; smaller ones as GEMMs on the NHWC rows, where oneDNN's per-call cost dominates
#: (tools/benchmarks/pointwise_conv.py: at 128-512 pixels the GEMMs measured 1.1-1.3x faster
#: than aten's path and oneDNN 0.90-0.97x; above 2048 pixels oneDNN 1.06-1.5x)
MIN_ONEDNN_PIXELS = 512


def pointwise_fast_path_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :class:`PointwiseConv2d` computes ``x`` by this module's kernels (see module
    docstring) rather than by ``nn.Conv2d``."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
            and not _autocast_on() and not is_graph_export()
            and not torch.compiler.is_compiling())


def _use_onednn(pixels: int) -> bool:
    return pixels > MIN_ONEDNN_PIXELS and torch.backends.mkldnn.is_available() and \
        torch.backends.mkldnn.enabled


def _conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.mkldnn_convolution(x, weight, bias, (0, 0), (1, 1), (1, 1), 1)


def _nhwc_rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> its (N*H*W, C) rows, a view."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N*H*W, C') rows -> the (N, C', H, W) channels-last map of ``like``'s batch and size."""
    n, _, h, w = like.shape
    return rows.reshape(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


class _ChannelsLastPointwise(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` for a 1x1 kernel, stride 1, no padding, one group, on a
    channels-last ``x``: output and input gradient by oneDNN (large maps) or as GEMMs on the
    NHWC rows (small maps), the weight gradient as one GEMM over every pixel of the batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.onednn = _use_onednn(x.shape[0] * x.shape[2] * x.shape[3])
        if ctx.onednn:
            return _conv1x1(x, weight, bias)
        matrix = weight.reshape(weight.shape[0], -1).t()
        rows = _nhwc_rows(x)
        out = rows @ matrix if bias is None else torch.addmm(bias, rows, matrix)
        return _from_rows(out, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        matrix = weight.reshape(weight.shape[0], -1)
        rows = _nhwc_rows(grad)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if ctx.onednn:
                grad_x = _conv1x1(grad, matrix.t().contiguous()[:, :, None, None], None)
            else:
                grad_x = _from_rows(rows @ matrix, grad)
        if ctx.needs_input_grad[1]:
            grad_w = (rows.t() @ _nhwc_rows(x)).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, unpadded, ungrouped ``nn.Conv2d`` that runs through oneDNN where that
    is faster (see module docstring); a drop-in ``nn.Conv2d`` in every other respect."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
        if pointwise_fast_path_applies(x, weight):
            return _ChannelsLastPointwise.apply(x, weight, bias)
        return super()._conv_forward(x, weight, bias)


def is_pointwise(kernel_size: int, stride: int, padding: int, groups: int) -> bool:
    """Whether a conv of these settings is the 1x1 case :class:`PointwiseConv2d` covers."""
    return kernel_size == 1 and stride == 1 and padding == 0 and groups == 1


__all__ = ['MIN_ONEDNN_PIXELS', 'PointwiseConv2d', 'is_pointwise', 'pointwise_fast_path_applies']
