"""1x1 convolutions for CPU training on channels-last maps through oneDNN, not aten's pick.

Why: aten picks the backend of a convolution by a heuristic written for NCHW inference; a
stride-1 1x1 convolution with a batch under 16 on one thread goes to its THNN path
(``_slow_conv2d``: a GEMM per image after a zero fill of the weight gradient, plus a copy
when the input is channels-last), forward and backward. Dense training runs exactly that
case (batch 2, 1x1 MLP / FFN / attention convolutions on channels-last maps;
:attr:`MobileBackbone.train_channels_last`). :class:`PointwiseConv2d` computes the same
three products on faster kernels: the output and the input gradient as oneDNN 1x1
convolutions (the gradient one with the transposed weight), the weight gradient as one GEMM
over every pixel of the batch (NHWC views, no copy), the bias gradient as a column sum
(or as the exact zeros it is when a batch-statistics BatchNorm follows: ``bias_grad_is_zero``).
Forward + backward, 1 thread, AMD EPYC (Zen 4): 1.06-1.25x on EfficientFormer-L1's MLP shapes
at 2x512x512; on maps of 512 pixels and fewer (EfficientViT's late stages) oneDNN's per-call
cost makes it 0.95-1.0x, so those stay with aten (``python tools/benchmarks/pointwise_conv.py``).

It takes this path only where it is the same function on a faster kernel: CPU, float32,
a channels-last 4-D input of more than :data:`MIN_ONEDNN_PIXELS` pixels, oneDNN enabled, no
autocast, and not while a graph is recorded (export, scripting, ``torch.compile``); everywhere
else it is an ``nn.Conv2d``, with the same parameters, state-dict keys and hooks.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from mmeff.models.layers.graph_mode import is_recording_graph
from mmeff.models.layers.memory_format import is_channels_last_map, nhwc_rows


def _autocast_on() -> bool:
    return torch.is_autocast_enabled('cpu')


#: maps of more pixels (batch x height x width) than this take oneDNN's kernels; on smaller
#: ones aten's own path is as fast (tools/benchmarks/pointwise_conv.py)
MIN_ONEDNN_PIXELS = 512


def pointwise_fast_path_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :class:`PointwiseConv2d` computes ``x`` by this module's kernels (see module
    docstring) rather than by ``nn.Conv2d``."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
            and is_channels_last_map(x) and x.shape[0] * x.shape[2] * x.shape[3] > MIN_ONEDNN_PIXELS
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not _autocast_on() and not is_recording_graph())


def _conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.mkldnn_convolution(x, weight, bias, (0, 0), (1, 1), (1, 1), 1)


class _ChannelsLastPointwise(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` for a 1x1 kernel, stride 1, no padding, one group, on a
    channels-last ``x``: output and input gradient by oneDNN, the weight gradient as one GEMM
    over every pixel of the batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                bias_grad_is_zero: bool = False) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.bias_grad_is_zero = bias_grad_is_zero
        return _conv1x1(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        matrix = weight.reshape(weight.shape[0], -1)
        rows = nhwc_rows(grad)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv1x1(grad, matrix.t().contiguous()[:, :, None, None], None)
        if ctx.needs_input_grad[1]:
            grad_w = (rows.t() @ nhwc_rows(x)).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.new_zeros(grad.shape[1]) if ctx.bias_grad_is_zero else rows.sum(0)
        return grad_x, grad_w, grad_b, None


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, unpadded, ungrouped ``nn.Conv2d`` that runs through oneDNN where that
    is faster (see module docstring); a drop-in ``nn.Conv2d`` in every other respect."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, bias_grad_is_zero: bool = False) -> torch.Tensor:
        """``conv2d(x)``. ``bias_grad_is_zero``: the caller guarantees that the loss does not
        depend on the bias (the output feeds only a BatchNorm that normalises with the batch's
        own statistics, which subtracts any per-channel constant), so the fast path returns
        the bias gradient as the exact zeros it is instead of summing the output gradient over
        every pixel (a full pass over the map, whose result is rounding noise)."""
        if pointwise_fast_path_applies(x, self.weight):
            return _ChannelsLastPointwise.apply(x, self.weight, self.bias, bias_grad_is_zero)
        return self._conv_forward(x, self.weight, self.bias)


def is_pointwise(kernel_size: int, stride: int, padding: int, groups: int) -> bool:
    """Whether a conv of these settings is the 1x1 case :class:`PointwiseConv2d` covers."""
    return kernel_size == 1 and stride == 1 and padding == 0 and groups == 1


__all__ = ['MIN_ONEDNN_PIXELS', 'PointwiseConv2d', 'is_pointwise', 'pointwise_fast_path_applies']
