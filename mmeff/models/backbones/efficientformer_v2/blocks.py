"""EfficientFormerV2 building blocks (training form) and their fused deploy forms.

Module and parameter names follow timm's ``efficientformer_v2.py`` (``mlp.fc1.conv``,
``token_mixer.q.bn``, ``ls1.gamma``, ...), so converting timm checkpoints is a matter of a few
renames; the only own names are ``attention_bias.table`` (the shared :class:`AttentionBias2d`).

Every block works at any input size and in either memory format (the backbone runs eval in
channels_last, where depth-wise convs are many times faster on CPU). ``fuse()`` folds the
BatchNorms, the attention scale, the first talking-head bias, the average-pool query branch and
the layer scales into neighbouring convs; each ``fuse()`` is idempotent and accepts children that
:func:`mmeff.models.layers.fusion` has already fused (it fuses bottom-up).
"""
import copy
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.layers import (AttentionBias2d, ConvBN, GELU2d, LayerScale, contiguous_nchw,
                                 drop_path_or_identity, folded, is_channels_last_map,
                                 is_compiling_for_cpu, is_graph_export, scaled_output)

Size2d = Tuple[int, int]


# ------------------------------------------------------------------------------ small helpers
@torch.no_grad()
def _scale_conv_output(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    """In place: ``conv(x) * scale`` (per output channel) becomes ``conv(x)``."""
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight))
    if conv.bias is not None:
        conv.bias.mul_(scale.to(conv.bias))


@torch.no_grad()
def _channels_last_weight(conv: nn.Module) -> nn.Module:
    """Store a dense (non depth-wise) k x k conv's weight channels_last: oneDNN then skips a
    weight reorder per call on channels_last input (~9% on the stride-2 3x3 convs on CPU)."""
    if isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.kernel_size != (1, 1):
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    return conv


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, heads*d, H, W) -> (B, heads, H*W, d) as a view whenever the layout allows (an
    NCHW copy of a channels-last map otherwise, whose gradient goes back channels-last)."""
    x = contiguous_nchw(x)
    b = x.shape[0]
    return x.flatten(2).reshape(b, heads, -1, x.shape[-2] * x.shape[-1]).transpose(-2, -1)


def _tokens_to_map(x: torch.Tensor, hw: Size2d, like: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, heads*d, H, W) in the memory format of ``like``."""
    b, heads, _, d = x.shape
    if not is_channels_last_map(like):
        return x.transpose(-2, -1).reshape(b, heads * d, hw[0], hw[1])
    return x.transpose(1, 2).reshape(b, hw[0], hw[1], heads * d).permute(0, 3, 1, 2)


def _bilinear2x_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)`` along one axis.

    Output ``2i`` samples the input at ``i - 1/4`` and ``2i + 1`` at ``i + 1/4``, i.e.
    ``(x[i-1] + 3 x[i]) / 4`` and ``(3 x[i] + x[i+1]) / 4``, with the edge rows repeated (the
    sample position clamped, as PyTorch does). Slices and weighted sums: TorchInductor fuses them
    into vectorised loops, where its lowering of ``interpolate`` (index arithmetic per element
    on a channels-last map) took 2.3 ms per call in V2-S0 (docs/deploy_speed.md).
    """
    n = x.shape[dim]
    before = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
    after = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    pairs = torch.stack([0.25 * before + 0.75 * x, 0.75 * x + 0.25 * after], dim + 1)
    return pairs.flatten(dim, dim + 1)


def upsample2x_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear 2x upsampling (what the model was trained with), cropped to ``size``.

    The strided conv produced ceil(H/2) x ceil(W/2); upsampling gives 2*ceil(H/2) rows, one more
    than H when H is odd, and the surplus last row/column is dropped. Every kept pixel samples the
    low-resolution map at the same position as for even sizes, so odd sizes see exactly the
    geometry of pretraining (the official dense code fails here instead, upstream issue #50).
    Under :func:`~mmeff.models.layers.is_compiling_for_cpu` the same interpolation is written
    out (:func:`_bilinear2x_along`), which TorchInductor turns into fast vectorised code.
    """
    if is_compiling_for_cpu():
        x = _bilinear2x_along(_bilinear2x_along(x, 3), 2)
    else:
        x = F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)
    if tuple(x.shape[-2:]) != tuple(size):
        x = x[..., :size[0], :size[1]]
    return x


def _mix_heads(attn: torch.Tensor, weight: torch.Tensor,
               bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Talking heads: a 1x1 conv across the head axis of (B, heads, Nq, Nk), as one batched GEMM.

    ``bias`` broadcasts against (B, heads, Nq*Nk): a (heads, 1) vector or a (heads, Nq*Nk) map.
    """
    b, heads, nq, nk = attn.shape
    w = weight.reshape(heads, heads).expand(b, heads, heads)
    flat = attn.reshape(b, heads, nq * nk)
    out = torch.bmm(w, flat) if bias is None else torch.baddbmm(bias, w, flat)
    return out.reshape(b, heads, nq, nk)


# ------------------------------------------------------------------------------------- stem
class Stem(nn.Module):
    """Two 3x3 stride-2 conv-BN-GELU layers: stride 4, widths ``out_channels // 2`` then full."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels // 2, 3, stride=2, bias=True)
        self.conv2 = ConvBN(out_channels // 2, out_channels, 3, stride=2, bias=True)
        self.act = GELU2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))))

    def fuse(self) -> 'Stem':
        self.conv1 = _channels_last_weight(folded(self.conv1))
        self.conv2 = _channels_last_weight(folded(self.conv2))
        return self


# ------------------------------------------------------------------------------ unified FFN
class UnifiedFFN(nn.Module):
    """1x1 conv-BN-GELU -> depth-wise 3x3 conv-BN-GELU -> 1x1 conv-BN (the paper's Fig. 2b).

    The depth-wise conv inside the FFN is V2's replacement for V1's pooling token mixer.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = ConvBN(dim, hidden, 1, bias=True)
        self.mid = ConvBN(hidden, hidden, 3, groups=hidden, bias=True)
        self.fc2 = ConvBN(hidden, dim, 1, bias=True)
        self.act = GELU2d()
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The FFN, times ``out_scale`` per channel if given (folded into fc2's BN)."""
        x = self.act(self.mid(self.act(self.fc1(x))))
        return self.drop(scaled_output(self.fc2, self.drop(x), out_scale))

    def fuse(self) -> 'UnifiedFFN':
        self.fc1, self.mid, self.fc2 = folded(self.fc1), folded(self.mid), folded(self.fc2)
        self.drop = nn.Identity()
        return self


# --------------------------------------------------------------------- multi-head attention
class Attention2d(nn.Module):
    """MHSA on a (B, C, H, W) map with talking heads and a depth-wise 3x3 conv on V.

    With ``stride=2`` (stage 3, "stride attention") Q/K/V are computed on the map downsampled
    by a strided depth-wise conv-BN and the output is upsampled back (:func:`upsample2x_to`).
    The position bias is learned over 2-D offsets on a ``table_size`` grid (7x7 at 224) and
    resized to the grid that occurs (:class:`AttentionBias2d`).

    Args:
        dim: channels in and out.
        key_dim: per-head query/key width (32 in all published models).
        num_heads: heads (8).
        attn_ratio: value width / key width per head (4).
        table_size: the attention grid at the pretraining resolution.
        stride: None or 2.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4,
                 table_size: Size2d = (7, 7), stride: Optional[int] = None):
        super().__init__()
        if stride not in (None, 1, 2):
            raise ValueError(f'Attention2d supports stride None or 2, got {stride}')
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.value_dim = int(attn_ratio * key_dim)
        qk_dim, v_dim = key_dim * num_heads, self.value_dim * num_heads
        self.stride = stride if stride and stride > 1 else None
        self.stride_conv = ConvBN(dim, dim, 3, stride=2, groups=dim, bias=True) \
            if self.stride else None
        self.q = ConvBN(dim, qk_dim, 1, bias=True)
        self.k = ConvBN(dim, qk_dim, 1, bias=True)
        self.v = ConvBN(dim, v_dim, 1, bias=True)
        self.v_local = ConvBN(v_dim, v_dim, 3, groups=v_dim, bias=True)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = GELU2d()
        self.proj = ConvBN(v_dim, dim, 1, bias=True)
        self.attention_bias = AttentionBias2d(num_heads, table_size)

    def forward(self, x: torch.Tensor, out_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The attention, times ``out_scale`` per channel if given (folded into proj's BN)."""
        size = x.shape[-2:]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        hw = (x.shape[-2], x.shape[-1])
        # the scale on the queries (B, heads, N, d), not on the (B, heads, N, N) logits, and the
        # first talking head (linear across heads) applied to the bias once for the batch:
        # W (qk + bias) + b = W qk + (W bias + b); two passes fewer over the logits each way
        q = _heads_first(self.q(x), self.num_heads) * self.scale
        k = _heads_first(self.k(x), self.num_heads).transpose(-2, -1)
        v = self.v(x)
        v_local = self.v_local(v)
        n = hw[0] * hw[1]
        mix1 = self.talking_head1.weight.reshape(self.num_heads, self.num_heads)
        head_bias = torch.addmm(self.talking_head1.bias[:, None], mix1,
                                self.attention_bias(hw).reshape(self.num_heads, n * n))
        attn = _mix_heads(q @ k, self.talking_head1.weight, head_bias).softmax(dim=-1)
        attn = _mix_heads(attn, self.talking_head2.weight, self.talking_head2.bias[:, None])
        out = _tokens_to_map(attn @ _heads_first(v, self.num_heads), hw, v_local) + v_local
        if self.stride is not None:
            out = upsample2x_to(out, size)
        return scaled_output(self.proj, self.act(out), out_scale)

    @torch.no_grad()
    def fuse(self) -> 'Attention2dDeploy':
        return Attention2dDeploy(self)


class Attention2dDeploy(nn.Module):
    """Inference form of :class:`Attention2d`: the same function with fewer ops.

    BNs folded into their convs, the attention scale folded into Q, Q and K computed by one
    conv, the first talking head's bias folded into the bias table (a per-head linear map
    commutes with the bicubic resize and the gather, whose weights sum to one).
    """

    @torch.no_grad()
    def __init__(self, attn: Attention2d):
        super().__init__()
        self.num_heads, self.stride = attn.num_heads, attn.stride
        self.stride_conv = folded(attn.stride_conv) if attn.stride_conv is not None else None
        q, k = folded(attn.q), folded(attn.k)
        self.qk_dim = q.out_channels
        self.qk = nn.Conv2d(q.in_channels, 2 * self.qk_dim, 1).to(q.weight)
        self.qk.weight.copy_(torch.cat([q.weight * attn.scale, k.weight]))
        self.qk.bias.copy_(torch.cat([q.bias * attn.scale, k.bias]))
        self.v, self.v_local, self.proj = folded(attn.v), folded(attn.v_local), folded(attn.proj)
        self.act = attn.act
        th1 = attn.talking_head1.weight.reshape(self.num_heads, self.num_heads)
        self.register_buffer('head_mix1', th1.detach().clone())
        self.register_buffer('head_mix2', attn.talking_head2.weight.detach().reshape(
            self.num_heads, self.num_heads).clone())
        self.register_buffer('head_bias2', attn.talking_head2.bias.detach()[:, None].clone())
        self.attention_bias = copy.deepcopy(attn.attention_bias)
        self.attention_bias.table.copy_(th1 @ attn.attention_bias.table
                                        + attn.talking_head1.bias[:, None])
        self.attention_bias.clear_cache()
        self.attention_bias.frozen = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        hw = (x.shape[-2], x.shape[-1])
        qk = self.qk(x)
        q = _heads_first(qk[:, :self.qk_dim], self.num_heads)
        k = _heads_first(qk[:, self.qk_dim:], self.num_heads).transpose(-2, -1)
        v = self.v(x)
        v_local = self.v_local(v)
        n = hw[0] * hw[1]
        bias = self.attention_bias(hw).reshape(self.num_heads, n * n)
        attn = _mix_heads(q @ k, self.head_mix1, bias).softmax(dim=-1)
        attn = _mix_heads(attn, self.head_mix2, self.head_bias2)
        out = _tokens_to_map(attn @ _heads_first(v, self.num_heads), hw, v_local) + v_local
        if self.stride is not None:
            out = upsample2x_to(out, size)
        return self.proj(self.act(out))


# ----------------------------------------------------------------- attention downsampling
class LocalGlobalQuery(nn.Module):
    """Queries on the stride-2 grid: (stride-2 sampling + depth-wise 3x3 stride-2 conv) -> 1x1."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim)
        self.proj = ConvBN(in_dim, out_dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class AttentionDownsample(nn.Module):
    """Attention from a stride-2 query grid to every key of the input map (no talking heads).

    Keys/values live on the (H, W) input grid, queries on (ceil(H/2), ceil(W/2)); query i sits at
    key position 2i, which is what ``AttentionBias2d(..., query_stride=2)`` encodes. The bias
    table covers the input grid at pretraining resolution (14x14 at 224).
    """

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8,
                 attn_ratio: int = 4, table_size: Size2d = (14, 14)):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.value_dim = int(attn_ratio * key_dim)
        qk_dim, v_dim = key_dim * num_heads, self.value_dim * num_heads
        self.q = LocalGlobalQuery(dim, qk_dim)
        self.k = ConvBN(dim, qk_dim, 1, bias=True)
        self.v = ConvBN(dim, v_dim, 1, bias=True)
        self.v_local = ConvBN(v_dim, v_dim, 3, stride=2, groups=v_dim, bias=True)
        self.act = GELU2d()
        self.proj = ConvBN(v_dim, out_dim, 1, bias=True)
        self.attention_bias = AttentionBias2d(num_heads, table_size)

    def _attend(self, q_map: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
        key_hw, query_hw = (x.shape[-2], x.shape[-1]), (q_map.shape[-2], q_map.shape[-1])
        q = _heads_first(q_map, self.num_heads)
        k = _heads_first(self.k(x), self.num_heads).transpose(-2, -1)
        v = self.v(x)
        v_local = self.v_local(v)
        if scale != 1.0:  # on the (B, heads, Nq, d) queries: a pass fewer over the logits
            q = q * scale
        attn = (q @ k + self.attention_bias(query_hw, key_hw, query_stride=2)).softmax(dim=-1)
        out = _tokens_to_map(attn @ _heads_first(v, self.num_heads), query_hw, v_local)
        return self.proj(self.act(out + v_local))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(self.q(x), x, self.scale)

    @torch.no_grad()
    def fuse(self) -> 'AttentionDownsampleDeploy':
        return AttentionDownsampleDeploy(self)


class AttentionDownsampleDeploy(AttentionDownsample):
    """Inference form: BNs folded, the scale folded into the query projection, and the
    stride-2 sampling branch folded into the depth-wise conv's centre tap (``pool(x)`` is
    ``x[..., ::2, ::2]``, exactly what the centre tap of a padded 3x3 stride-2 conv reads)."""

    @torch.no_grad()
    def __init__(self, attn: AttentionDownsample):
        nn.Module.__init__(self)  # built from fused parts; only ``_attend`` is inherited
        self.num_heads, self.key_dim = attn.num_heads, attn.key_dim
        local = copy.deepcopy(attn.q.local)
        local.weight[:, 0, 1, 1] += 1.0
        q_proj = folded(attn.q.proj)
        _scale_conv_output(q_proj, torch.full((q_proj.out_channels,), attn.scale))
        self.q = nn.Sequential(local, q_proj)
        self.k, self.v = folded(attn.k), folded(attn.v)
        self.v_local, self.proj = folded(attn.v_local), folded(attn.proj)
        self.act = attn.act
        self.attention_bias = attn.attention_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._attend(self.q(x), x, 1.0)

    def fuse(self) -> 'AttentionDownsampleDeploy':
        return self


class Downsample(nn.Module):
    """Entry of a stage: 3x3 stride-2 conv-BN, plus attention downsampling (stage 4) added to it.

    Output size is ceil(H/2) x ceil(W/2) on both branches for any H, W.
    """

    def __init__(self, in_dim: int, out_dim: int, use_attn: bool = False,
                 table_size: Size2d = (14, 14)):
        super().__init__()
        self.conv = ConvBN(in_dim, out_dim, 3, stride=2, bias=True)
        self.attn = AttentionDownsample(in_dim, out_dim, table_size=table_size) \
            if use_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out if self.attn is None else self.attn(x) + out

    def fuse(self) -> 'Downsample':
        self.conv = _channels_last_weight(folded(self.conv))
        if self.attn is not None:
            self.attn = folded(self.attn)
        return self


# -------------------------------------------------------------------------------- the block
class EfficientFormerV2Block(nn.Module):
    """``x + ls1 * attn(x)`` (optional) then ``x + ls2 * ffn(x)``, with stochastic depth.

    Args:
        dim: channels.
        mlp_ratio: FFN expansion.
        use_attn: whether the block has the global MHSA token mixer (last blocks of stages 3-4).
        stride: 2 for stride attention (stage 3), else None.
        table_size: attention grid at the pretraining resolution.
        drop_path: stochastic depth probability.
        layer_scale_init: initial layer-scale value; None disables layer scale.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, use_attn: bool = False,
                 stride: Optional[int] = None, table_size: Size2d = (7, 7),
                 drop_path: float = 0.0, layer_scale_init: Optional[float] = 1e-5):
        super().__init__()

        def layer_scale() -> nn.Module:
            if layer_scale_init is None:
                return nn.Identity()
            return LayerScale(dim, layer_scale_init, channels_first=True)

        if use_attn:
            self.token_mixer = Attention2d(dim, table_size=table_size, stride=stride)
            self.ls1 = layer_scale()
            self.drop_path1 = drop_path_or_identity(drop_path)
        else:
            self.token_mixer = self.ls1 = self.drop_path1 = None
        self.mlp = UnifiedFFN(dim, int(dim * mlp_ratio))
        self.ls2 = layer_scale()
        self.drop_path2 = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folds_layer_scales():
            if self.token_mixer is not None:
                x = x + self.drop_path1(self.token_mixer(x, out_scale=self.ls1.gamma))
            return x + self.drop_path2(self.mlp(x, out_scale=self.ls2.gamma))
        if self.token_mixer is not None:
            x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))

    def folds_layer_scales(self) -> bool:
        """Whether each layer scale is computed inside the BatchNorm that ends its branch (the
        same function in one pass fewer over the map forward and two fewer backward; see
        :func:`~mmeff.models.layers.conv_norm.scaled_batch_norm`; stochastic depth's
        per-sample mask commutes with it): with layer scales and the training-form branches
        (not after ``fuse()``, not in the search supernet's slimmable forms), and not while a
        graph is recorded."""
        branches = [(self.ls2, self.mlp, UnifiedFFN)]
        if self.token_mixer is not None:
            branches.append((self.ls1, self.token_mixer, Attention2d))
        return not is_graph_export() and all(
            type(scale) is LayerScale and type(branch) is cls for scale, branch, cls in branches)

    @torch.no_grad()
    def fuse(self) -> 'EfficientFormerV2Block':
        """Fold BNs, and each layer scale into the last conv of its branch (in place)."""
        self.mlp = folded(self.mlp)
        if isinstance(self.ls2, LayerScale):
            _scale_conv_output(self.mlp.fc2, self.ls2.gamma)
            self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()
        if self.token_mixer is not None:
            self.token_mixer = folded(self.token_mixer)
            if isinstance(self.ls1, LayerScale):
                _scale_conv_output(self.token_mixer.proj, self.ls1.gamma)
                self.ls1 = nn.Identity()
            self.drop_path1 = nn.Identity()
        return self


class EfficientFormerV2Stage(nn.Module):
    """One stage: ``downsample`` (Identity for the first) followed by ``blocks``."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def ceil_div(size: int, stride: int) -> int:
    return int(math.ceil(size / stride))
