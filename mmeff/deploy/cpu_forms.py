"""Compile-only forms of EfficientViT's convolutions, used by :func:`compile_for_cpu`.

On the 224x224 model's 4x4-14x14 maps a oneDNN convolution called from the AOTInductor
package costs tens of microseconds of fixed overhead per call, more than its arithmetic
(docs/deploy_speed.md, "EfficientViT's small kernels"; torch.profiler of the compiled M0 /
M4, 1 thread: a 16-channel 7x7 depth-wise conv on a 4x4 map ~115 us, a 1x1 conv 64 -> 256 on
a 1x1 map ~45 us). EfficientViT runs ~90 such convolutions per image, so under compilation,
on maps of at most :data:`SMALL_MAP` positions:

* every depth-wise convolution is written as pointwise arithmetic on the zero-padded input
  (:func:`depthwise_as_shifted_sums`), which Inductor generates as a fused loop (with the
  adds around it) instead of calling oneDNN;
* every 1x1 convolution is ``F.linear`` on the NHWC view of the channels-last map (no copy),
  a GEMM whose fixed cost is a fraction of oneDNN's convolution (``compile_for_cpu`` has
  Inductor autotune these GEMMs).

Scratch A/Bs (1 thread, batch 1, 224x224, process CPU time, round-robin against ONNX Runtime
in one process): M0 1.52 -> 1.19x ORT, M4 1.50 -> 1.35x with both forms; 1.15x and 1.20x
with the autotuning as well. Outside :func:`~mmeff.models.layers.is_compiling_for_cpu`
(eager, training, ONNX / CoreML / TorchScript export) the swapped modules are the plain
``nn.Conv2d`` they replace: same parameters, state-dict keys and function. Larger maps (dense
inputs) keep oneDNN, which has not been measured slower there.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.backbones.efficientvit import EfficientViT
from mmeff.models.layers import is_compiling_for_cpu

#: largest map (height x width of one image or window) that takes the compile forms: the
#: 224x224 model's 14x14 stage, the range measured (16-196 positions)
SMALL_MAP = 196


def _taps(size: int, kernel: int, stride: int, pad: int) -> Tuple[int, List[int]]:
    """Output size along one axis and the kernel offsets that read at least one input
    element (the others only ever see padding, e.g. a 7x7 kernel's outer taps on a 2x2 map)."""
    out = (size + 2 * pad - kernel) // stride + 1
    reads = [range(i, i + stride * (out - 1) + 1, stride) for i in range(kernel)]
    return out, [i for i, rows in enumerate(reads) if any(pad <= r < pad + size for r in rows)]


def depthwise_as_shifted_sums(x: torch.Tensor, weight: torch.Tensor,
                              bias: Optional[torch.Tensor], stride: Tuple[int, int],
                              padding: Tuple[int, int]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=C)`` for a depth-wise ``weight``
    (C, 1, kh, kw), written as pointwise arithmetic that a compiler fuses into one loop.

    3x3 kernels: ``bias + sum_ij w[:, ij] * x_pad[..., i::s, j::s]`` over the taps that reach
    the map. Larger kernels (the attention's 5x5 / 7x7 q convs on 16 channels): a sum over
    the ``unfold`` ed windows, one reduction; Inductor compiles it in a fraction of the time
    of 25-49 shifted terms, and it ran faster (torch.compile, 1 thread: 16 channels 7x7 on
    4x7x7 windows 32 us vs 98 us for the shifted sums, oneDNN 56 us; 384 channels 3x3 on 4x4:
    shifted sums 20 us, unfold 23 us, oneDNN 56 us)."""
    _, channels, height, width = x.shape
    kh, kw = weight.shape[-2:]
    (sh, sw), (ph, pw) = stride, padding
    padded = F.pad(x, (pw, pw, ph, ph))
    if kh * kw > 9:
        windows = padded.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, Ho, Wo, kh, kw) view
        out = (windows * weight.reshape(1, channels, 1, 1, kh, kw)).sum((-2, -1))
    else:
        out_h, rows = _taps(height, kh, sh, ph)
        out_w, cols = _taps(width, kw, sw, pw)
        taps = weight.reshape(channels, kh, kw)
        out = None
        for i in rows:
            for j in cols:
                term = padded[:, :, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
                term = term * taps[:, i, j].reshape(1, channels, 1, 1)
                out = term if out is None else out + term
    if bias is not None:
        out = out + bias.reshape(1, channels, 1, 1)
    return out


def _small(x: torch.Tensor) -> bool:
    return x.shape[-2] * x.shape[-1] <= SMALL_MAP


class _CompileFormConv(nn.Conv2d):
    """An ``nn.Conv2d`` that takes :meth:`compile_form` when compiled for CPU on a small map."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> '_CompileFormConv':
        """The same convolution, sharing ``conv``'s parameters."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None,
                  padding_mode=conv.padding_mode, device='meta')
        new.weight, new.bias = conv.weight, conv.bias
        return new.train(conv.training)

    def compile_form(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_compiling_for_cpu() and _small(x):
            return self.compile_form(x)
        return super().forward(x)


class ShiftedSumDepthwiseConv(_CompileFormConv):
    """Depth-wise conv; compiled for CPU: :func:`depthwise_as_shifted_sums`."""

    def compile_form(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_as_shifted_sums(x, self.weight, self.bias, self.stride, self.padding)


class LinearPointwiseConv(_CompileFormConv):
    """1x1 conv; compiled for CPU: ``F.linear`` on the NHWC view (a channels-last map's own
    memory), returned as the channels-last NCHW view of the result."""

    def compile_form(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return out.permute(0, 3, 1, 2)


def _compile_form_of(module: nn.Module) -> Optional[type]:
    if not isinstance(module, nn.Conv2d) or isinstance(module, _CompileFormConv):
        return None
    if module.padding_mode != 'zeros' or isinstance(module.padding, str) \
            or module.dilation != (1, 1):
        return None
    if module.groups == module.in_channels == module.out_channels and module.groups > 1:
        return ShiftedSumDepthwiseConv
    if module.kernel_size == (1, 1) and module.stride == (1, 1) and module.groups == 1 \
            and module.padding == (0, 0):
        return LinearPointwiseConv
    return None


def use_cpu_compile_forms(model: nn.Module) -> int:
    """Swap, in place, the depth-wise and 1x1 convolutions of every EfficientViT backbone in
    ``model`` for their compile-form modules (the same function everywhere; a different graph
    only under :func:`~mmeff.models.layers.is_compiling_for_cpu`). Returns how many."""
    swapped = 0
    for backbone in [m for m in model.modules() if isinstance(m, EfficientViT)]:
        for parent in list(backbone.modules()):
            for name, child in list(parent.named_children()):
                form = _compile_form_of(child)
                if form is not None:
                    setattr(parent, name, form.from_conv(child))  # ModuleList: name is '0'...
                    swapped += 1
    return swapped


__all__ = ['SMALL_MAP', 'depthwise_as_shifted_sums', 'ShiftedSumDepthwiseConv',
           'LinearPointwiseConv', 'use_cpu_compile_forms']
