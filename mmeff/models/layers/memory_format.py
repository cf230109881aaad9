"""Memory-format boundaries that keep gradients in the format of the forward tensors.

Why: the backbones train channels-last on CPU and hand out contiguous NCHW maps (mmcv's CPU
ops and most necks expect them). ``x.contiguous()`` is that boundary in the forward pass, but
its backward passes the neck's NCHW gradient unchanged into the channels-last network, and
PyTorch's CPU kernels are many times slower on mixed formats than on either one: BatchNorm
backward with a channels-last input and an NCHW gradient 6-60x (2x128x128x128: 55 ms vs
5 ms), GELU backward ~9x, and every residual sum in between mixes formats too. One copy of
the gradient at the boundary restores the format everything behind it was computed in.
"""
import torch


def is_channels_last_map(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels-last (NHWC strides) and not also contiguous NCHW (as a
    1x1 map or a single channel would be): the one test of the layout every CPU fast path and
    format boundary decides by."""
    return x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last)


def nhwc_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> its (N*H*W, C) pixel rows: a view of a channels-last map (a copy of
    any other), the matrix a 1x1 convolution is a GEMM on."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if is_channels_last_map(x) else torch.contiguous_format


class _FormatBoundary(torch.autograd.Function):
    """Forward ``x`` in ``memory_format``; backward the gradient in ``x``'s own format."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.source = _format_of(x)
        if x.is_contiguous(memory_format=memory_format):
            return x.view_as(x)  # a new output even when nothing is copied
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.contiguous(memory_format=ctx.source), None


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x.contiguous(memory_format=...)`` whose gradient comes back in ``x``'s own memory
    format (module doc): the boundary between a channels-last and an NCHW part of a network,
    also where ``x`` already has the format but later views (a transposed matmul operand)
    would hand back a gradient in the other one. Outside autograd (eval, export, tensors
    without gradient) the plain conversion."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return x.contiguous(memory_format=memory_format)
    return _FormatBoundary.apply(x, memory_format)


def contiguous_nchw(x: torch.Tensor) -> torch.Tensor:
    """:func:`to_memory_format` to contiguous NCHW: what the backbones hand out."""
    return to_memory_format(x, torch.contiguous_format)


__all__ = ['contiguous_nchw', 'is_channels_last_map', 'nhwc_rows', 'to_memory_format']
