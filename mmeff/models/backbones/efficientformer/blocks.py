"""EfficientFormer (V1) building blocks: conv stem, MB4D, MB3D and their deploy forms.

The network (paper §4.1, Fig. 3) is a 4-D partition of CONV-BN MetaBlocks (MB4D: pool token
mixer + 1x1 Conv-BN MLP) followed, after one reshape, by a 3-D partition of ViT-style
MetaBlocks (MB3D: LayerNorm + MHSA with a learned relative-position bias, LayerNorm + Linear
MLP). Both kinds carry a per-channel layer scale on each residual branch.

Every block has a ``fuse()`` that returns an inference-only equivalent (see
:func:`mmeff.models.layers.fusion`): BatchNorms are already folded into their convs by then, and the
block additionally folds what is linear and adjacent — layer scales into the last conv/linear
of their branch, LayerNorm affines into the following linear, the attention scale into the
query weights — so that deployment runs fewer, larger ops with the same result.
"""
import copy
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from mmeff.models.layers import (AttentionBias2d, ConvBN, GELU2d, LayerScale,
                                 conv1x1_to_linear, drop_path_or_identity, folded, is_graph_export,
                                 scaled_output, use_graph_forms)

Size2d = Tuple[int, int]

def _output_scaled(layer: nn.Module, scale: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` (Linear or Conv2d, with bias) with its output multiplied by ``scale``
    (one factor per output channel)."""
    layer = copy.deepcopy(layer)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    with torch.no_grad():
        layer.weight.mul_(scale.reshape(shape))
        layer.bias.mul_(scale)
    return layer


def _input_affine_folded(linear: nn.Linear, weight: torch.Tensor,
                         bias: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` computing ``linear(x * weight + bias)`` (LayerNorm affine folding)."""
    linear = copy.deepcopy(linear)
    with torch.no_grad():
        linear.bias.add_(linear.weight @ bias)
        linear.weight.mul_(weight[None, :])
    return linear


# ----------------------------------------------------------------------------------------- stem
class ConvStem(nn.Module):
    """Two 3x3 stride-2 Conv-BN-ReLU layers (stride 4), the paper's patch embedding (Eq. 3)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels // 2, 3, stride=2, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = ConvBN(out_channels // 2, out_channels, 3, stride=2, bias=True)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))))

    def fuse(self) -> 'ConvStemDeploy':
        return ConvStemDeploy(folded(self.conv1), folded(self.conv2))


class ConvStemDeploy(nn.Module):
    """Inference form of :class:`ConvStem` (BNs folded) that also switches the network to
    channels-last memory (NHWC strides, same NCHW shape): every later op keeps that layout, and
    on CPU it is what makes the pool mixer (count_include_pad=False average pooling is ~9x
    faster in NHWC), the 3x3 oneDNN convs and the NHWC linears of :class:`MB4DDeploy` fast.
    Skipped while tracing/scripting, so exported graphs get no layout op. The conv weights are
    stored channels-last too (else oneDNN reorders them on every call)."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d):
        super().__init__()
        self.conv1 = conv1.to(memory_format=torch.channels_last)
        self.conv2 = conv2.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_graph_export():
            x = x.contiguous(memory_format=torch.channels_last)
        return F.relu(self.conv2(F.relu(self.conv1(x), inplace=True)), inplace=True)


# ----------------------------------------------------------------------------------------- MB4D
class PoolMixer(nn.Module):
    """PoolFormer token mixer ``avgpool(x) - x`` (the block adds x back); borders average
    only the valid pixels (``count_include_pad=False``), as in the official model."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class _PoolLerp(torch.autograd.Function):
    """``lerp(x, pool(x), gamma)`` = ``x + gamma * (pool(x) - x)`` (MB4D's scaled token mixer)
    with a backward of fewer passes over the map than autograd's.

    Autograd differentiates lerp term by term: ``grad * (1 - gamma)``, ``grad * gamma`` into
    the pooling's backward, ``end - x`` recomputed for gamma's gradient, and the two gradients
    of ``x`` summed; six full-size results. Here the forward keeps ``pool(x) - x`` (in place
    in the pooled map, saved instead of ``x`` and ``pool(x)``), and since average pooling is
    linear per channel, ``grad_x = grad + gamma * (pool'(grad) - grad)`` =
    ``lerp(grad, pool'(grad), gamma)`` is one lerp written into the pooling's gradient: two
    full-size results (``pool'(grad)`` and ``grad * diff`` for gamma's sum). The output is
    the same lerp as in eval."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor, pool: nn.AvgPool2d) -> torch.Tensor:
        pooled = pool(x)
        out = torch.lerp(x, pooled, gamma)
        ctx.save_for_backward(pooled.sub_(x), gamma)
        ctx.pool = (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                    pool.count_include_pad, pool.divisor_override)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        diff, gamma = ctx.saved_tensors
        grad_x = grad_gamma = None
        if ctx.needs_input_grad[0]:
            kernel, stride, padding, ceil_mode, include_pad, divisor = ctx.pool
            grad_x = torch.ops.aten.avg_pool2d_backward(
                grad, diff, _pair(kernel), _pair(stride), _pair(padding), ceil_mode,
                include_pad, divisor)
            torch.lerp(grad, grad_x, gamma, out=grad_x)
        if ctx.needs_input_grad[1]:
            grad_gamma = (grad * diff).sum((0, 2, 3)).reshape(gamma.shape)
        return grad_x, grad_gamma, None


def pool_lerp(x: torch.Tensor, pool: nn.AvgPool2d, gamma: torch.Tensor) -> torch.Tensor:
    """``torch.lerp(x, pool(x), gamma)`` (``gamma`` of shape (C, 1, 1)); with gradients, by
    :class:`_PoolLerp` (same output, cheaper backward)."""
    if torch.is_grad_enabled() and (x.requires_grad or gamma.requires_grad):
        return _PoolLerp.apply(x, gamma, pool)
    return torch.lerp(x, pool(x), gamma)


class ConvMlp(nn.Module):
    """1x1 Conv-BN, GELU, 1x1 Conv-BN (the MB4D MLP, Eq. 4)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = ConvBN(dim, hidden_dim, 1, bias=True)
        self.act = GELU2d()
        self.fc2 = ConvBN(hidden_dim, dim, 1, bias=True)

    def forward(self, x: torch.Tensor, out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The MLP, times ``out_scale`` per channel if given (folded into fc2's BN)."""
        return scaled_output(self.fc2, self.act(self.fc1(x)), out_scale)


class MB4D(nn.Module):
    """4-D MetaBlock on (B, C, H, W): ``x + ls1 * (pool(x) - x)``, then ``x + ls2 * mlp(x)``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, pool_size: int = 3,
                 drop_path: float = 0.0, layer_scale_init: float = 1e-5):
        super().__init__()
        self.token_mixer = PoolMixer(pool_size)
        self.ls1 = LayerScale(dim, layer_scale_init, channels_first=True)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init, channels_first=True)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.folds_layer_scales():
            x = x + self.drop_path(self.ls1(self.token_mixer(x)))
            return x + self.drop_path(self.ls2(self.mlp(x)))
        if isinstance(self.drop_path, nn.Identity):
            x = pool_lerp(x, self.token_mixer.pool, self.ls1.gamma.to(x.dtype)[:, None, None])
        else:  # the per-sample mask sits between the scale and the sum
            x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.mlp(x, out_scale=self.ls2.gamma))

    def folds_layer_scales(self) -> bool:
        """Whether the forward computes the same function in fewer passes over the map, which
        training at dense resolutions is bound by: ``ls2`` inside fc2's BatchNorm affine
        (stochastic depth's per-sample mask commutes with it, and draws as before) and, without
        stochastic depth, ``x + ls1 * (pool(x) - x)`` as one ``lerp(x, pool(x), ls1)``. Not
        while a graph is recorded (export keeps the plain ops)."""
        return (type(self.ls1) is LayerScale and type(self.ls2) is LayerScale
                and not is_graph_export())

    def fuse(self) -> 'MB4DDeploy':
        mlp = self.mlp
        fc2 = _output_scaled(folded(mlp.fc2), self.ls2.gamma.detach())
        return MB4DDeploy(self.ls1.gamma.detach(), self.token_mixer.pool,
                          conv1x1_to_linear(folded(mlp.fc1)), mlp.act, conv1x1_to_linear(fc2))


class MB4DDeploy(nn.Module):
    """Inference form of :class:`MB4D`, BNs and ls2 folded into the 1x1 convs; one form per
    backend (both compute ``y = x + ls1 * (pool(x) - x)``, then ``y + fc2(gelu(fc1(y)))``):

    - PyTorch (eager, compile): ``lerp(x, pool(x), ls1)`` in one kernel, then the 1x1 convs
      as linears on the NHWC view (no copy for channels-last input, and GELU's contiguous
      kernel, ~1.5x faster than on channels-last NCHW strides).
    - Graph export (ONNX, CoreML, TorchScript): NCHW only, ``ls1`` as two depth-wise 1x1
      convs, ``dw(pool(x), ls1) + dw(x, 1 - ls1)``. ONNX Runtime keeps a chain of Conv /
      AveragePool / Gelu / same-shape Add in its blocked NCHWc layout and fuses the residual
      Add into the conv; a per-channel Mul or Sub, a Transpose or a Gemm on an NHWC view
      each cost a layout round trip (``ReorderInput`` / ``ReorderOutput``), 2-4 per block
      (docs/deploy_speed.md).
    """

    def __init__(self, gamma1: torch.Tensor, pool: nn.AvgPool2d, fc1: nn.Linear, act: nn.Module,
                 fc2: nn.Linear):
        super().__init__()
        self.register_buffer('gamma1', gamma1.reshape(-1, 1, 1).clone())
        self.pool = pool
        self.fc1 = fc1
        self.act = act
        self.fc2 = fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_graph_forms():
            return self._forward_nchw(x)
        gamma1 = self.gamma1
        if gamma1.dtype != x.dtype:  # autocast: x is fp16/bf16, lerp wants one dtype
            gamma1 = gamma1.to(x.dtype)
        x = torch.lerp(x, self.pool(x), gamma1).permute(0, 2, 3, 1)
        x = x + self.fc2(self.act(self.fc1(x)))
        return x.permute(0, 3, 1, 2)

    def _forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        dw = self.gamma1.reshape(-1, 1, 1, 1)
        groups = dw.shape[0]
        x = F.conv2d(self.pool(x), dw, groups=groups) + F.conv2d(x, 1 - dw, groups=groups)
        hidden = self.act(F.conv2d(x, self.fc1.weight[:, :, None, None], self.fc1.bias))
        return x + F.conv2d(hidden, self.fc2.weight[:, :, None, None], self.fc2.bias)


# ----------------------------------------------------------------------------------------- MB3D
class Attention(nn.Module):
    """MHSA with a learned relative-position bias (Eq. 6), on (B, N, C) tokens of an (H, W) grid.

    Per head: queries/keys of ``key_dim`` and values of ``attn_ratio * key_dim`` channels; the
    fused ``qkv`` projection is laid out head by head as [q, k, v] (the official layout, so
    checkpoints map 1:1). The bias is an :class:`AttentionBias2d` over 2-D offsets, learned on
    the ``table_size`` grid (7x7 at 224x224) and resized to the grid that occurs.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4,
                 table_size: Sequence[int] = (7, 7)):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, dim)
        self.attention_bias = AttentionBias2d(num_heads, table_size)

    def split_heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, C) -> q, k, v of shape (B, heads, N, d)."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        return qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=-1)

    def forward(self, x: torch.Tensor, hw: Size2d) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        # the scale on the (B, heads, N, d) queries, not on the (B, heads, N, N) logits: one
        # pass fewer over the logits forward and backward
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.attention_bias(hw)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).flatten(2))


class LinearMlp(nn.Module):
    """Linear, GELU, Linear on tokens (the MB3D MLP, Eq. 5)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MB3D(nn.Module):
    """3-D MetaBlock on (B, N, C): pre-LN MHSA and pre-LN Linear MLP, each with a layer scale."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 layer_scale_init: float = 1e-5, table_size: Sequence[int] = (7, 7)):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim, table_size=table_size)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LinearMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor, hw: Size2d) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(self.norm1(x), hw)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

    def fuse(self) -> 'MB3DDeploy':
        attn, mlp = self.token_mixer, self.mlp
        qkv = _input_affine_folded(attn.qkv, self.norm1.weight, self.norm1.bias)
        # fold the 1/sqrt(d) attention scale into the query rows of every head
        per_head = 2 * attn.key_dim + attn.val_dim
        row_scale = torch.ones(attn.num_heads, per_head, device=qkv.weight.device,
                               dtype=qkv.weight.dtype)
        row_scale[:, :attn.key_dim] = attn.scale
        qkv = _output_scaled(qkv, row_scale.flatten())
        proj = _output_scaled(attn.proj, self.ls1.gamma.detach())
        fc1 = _input_affine_folded(mlp.fc1, self.norm2.weight, self.norm2.bias)
        fc2 = _output_scaled(mlp.fc2, self.ls2.gamma.detach())
        return MB3DDeploy(self.norm1.normalized_shape, (self.norm1.eps, self.norm2.eps), qkv,
                          proj, attn.attention_bias, (attn.num_heads, attn.key_dim, attn.val_dim),
                          fc1, mlp.act, fc2)


class MB3DDeploy(nn.Module):
    """Inference form of :class:`MB3D`: affine-free LayerNorms (their affines, the attention
    scale and both layer scales live in the linears) and fused scaled-dot-product attention."""

    def __init__(self, normalized_shape: Sequence[int], eps: Tuple[float, float], qkv: nn.Linear,
                 proj: nn.Linear, attention_bias: AttentionBias2d, head_dims: Tuple[int, int, int],
                 fc1: nn.Linear, act: nn.Module, fc2: nn.Linear):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.qkv = qkv
        self.proj = proj
        self.attention_bias = attention_bias
        self.num_heads, self.key_dim, self.val_dim = head_dims
        self.fc1 = fc1
        self.act = act
        self.fc2 = fc2

    def forward(self, x: torch.Tensor, hw: Size2d) -> torch.Tensor:
        B, N, _ = x.shape
        y = F.layer_norm(x, self.normalized_shape, eps=self.eps[0])
        qkv = self.qkv(y).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attention_bias(hw),
                                             scale=1.0)
        x = x + self.proj(out.transpose(1, 2).flatten(2))
        y = F.layer_norm(x, self.normalized_shape, eps=self.eps[1])
        return x + self.fc2(self.act(self.fc1(y)))


# ---------------------------------------------------------------------------------------- stage
def tokens_to_map(x: torch.Tensor, hw: Size2d) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) view (channels-last strides, no copy)."""
    return x.unflatten(1, hw).permute(0, 3, 1, 2)


def call_block(block: nn.Module, *args):
    return block(*args)


class EfficientFormerStage(nn.Module):
    """One stage: optional 3x3 stride-2 Conv-BN embedding, MB4D blocks, then MB3D blocks.

    The MB3D blocks are the last ``num_3d`` of the stage; before the first of them the map is
    reshaped to tokens once. The stage always returns an NCHW map (a free view of the tokens),
    so dense outputs, the next stage's conv embedding and the classifier head all see one format.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, num_3d: int, downsample: bool,
                 mlp_ratio: float, pool_size: int, drop_path: Sequence[float],
                 layer_scale_init: float, table_size: Sequence[int]):
        super().__init__()
        self.downsample = ConvBN(in_dim, dim, 3, stride=2, bias=True) if downsample \
            else nn.Identity()
        self.num_4d = depth - num_3d
        blocks = []
        for j in range(depth):
            if j < self.num_4d:
                blocks.append(MB4D(dim, mlp_ratio, pool_size, drop_path[j], layer_scale_init))
            else:
                blocks.append(MB3D(dim, mlp_ratio, drop_path[j], layer_scale_init, table_size))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, run_block: Callable = call_block) -> torch.Tensor:
        x = self.downsample(x)
        hw = (x.shape[2], x.shape[3])
        for j, block in enumerate(self.blocks):
            if j < self.num_4d:
                x = run_block(block, x)
            else:
                if j == self.num_4d:
                    x = x.flatten(2).transpose(1, 2)
                x = run_block(block, x, hw)
        return tokens_to_map(x, hw) if x.dim() == 3 else x

    def fuse(self) -> 'EfficientFormerStage':
        """Deploy: the blocks are replaced by their deploy forms by :func:`mmeff.models.layers.fusion`;
        here the embedding conv is folded and stored channels-last, the layout
        :class:`ConvStemDeploy` switches the network to."""
        if not isinstance(self.downsample, nn.Identity):
            self.downsample = folded(self.downsample).to(memory_format=torch.channels_last)
        return self


def count_from_end(depths: Sequence[int], num_last: int) -> Tuple[int, ...]:
    """How many of the last ``num_last`` blocks of the network fall into each stage."""
    out = []
    remaining = num_last
    for d in reversed(depths):
        take = min(d, remaining)
        out.append(take)
        remaining -= take
    return tuple(reversed(out))


__all__ = [
    'ConvStem', 'ConvStemDeploy', 'PoolMixer', 'ConvMlp', 'MB4D', 'MB4DDeploy', 'Attention',
    'LinearMlp', 'MB3D', 'MB3DDeploy', 'EfficientFormerStage', 'tokens_to_map', 'count_from_end'
]
