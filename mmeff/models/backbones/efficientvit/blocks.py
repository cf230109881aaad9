"""Building blocks of Microsoft's EfficientViT (Liu et al., CVPR 2023): sandwich blocks with
cascaded group attention in local windows, and sandwich subsample blocks.

Layout facts (paper §3, checked against timm 1.0.31 ``efficientvit_msra`` and microsoft/Cream):
- 16x overlapping patch embedding: Conv3x3/2-BN-ReLU x3 then Conv3x3/2-BN (C/8, C/4, C/2, C).
- Sandwich block: DWConv -> FFN -> cascaded group attention -> DWConv -> FFN, each a residual
  branch; FFN = 1x1 conv (ratio 2) - ReLU - 1x1 conv; BN after every conv, no LayerNorm.
- Cascaded group attention: head j sees split j of the channels plus head j-1's output, has its
  own 1x1 QKV conv (key dim 16, value dim C/h) and a depth-wise conv on q (kernel per head),
  a learned bias per 2-D |offset| in the window; ReLU + 1x1 conv project the concatenated heads.
- Subsample block: (DWConv, FFN) -> inverted residual 1x1 (x4) - DW3x3/2 - SE(1/4) - 1x1 ->
  (DWConv, FFN).
The modules keep only what a forward needs; the zero-initialised BNs of residual branches
follow the official code (``bn_weight_init=0``).
"""
import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.layers import (AttentionBias2d, ConvBN, TensorCache, caching_allowed,
                                 conv1x1_to_linear, drop_path_or_identity, folded, fuse_conv_bn,
                                 is_compiling_for_cpu, is_graph_export, nhwc_rows)

Size2d = Tuple[int, int]


class ResidualDWConv(nn.Module):
    """``x + DropPath(BN(DWConv3x3(x)))``, the token-interaction layer before every FFN.

    ``fuse()`` returns ONE depth-wise conv: BN folded, and the identity added to the centre
    tap (``x + conv(x) == conv'(x)`` with ``w'[c, 0, 1, 1] = w[c, 0, 1, 1] + 1``), which also
    removes the residual add from the deployed graph.
    """

    def __init__(self, dim: int, bn_weight_init: float = 1.0, drop_path: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv = fuse_conv_bn(self.conv, self.bn)
        conv.weight[:, 0, 1, 1] += 1.0
        return conv


class ResidualFFN(nn.Module):
    """``x + DropPath(pw2(ReLU(pw1(x))))`` with 1x1 ConvBNs, expansion 2 (paper §3.1)."""

    def __init__(self, dim: int, hidden: int, drop_path: float = 0.0):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.act(self.pw1(x))))


def conv_bn_rows(layer: ConvBN, rows: torch.Tensor, bhw: Tuple[int, int, int]) -> torch.Tensor:
    """``layer`` (a 1x1 :class:`ConvBN`) on the ``(B*H*W, C)`` pixel rows of a ``bhw`` map:
    one GEMM, then the layer's own BatchNorm on the result viewed as a channels-last map (the
    statistics of the map itself; running statistics, SyncBN and ``norm_eval`` unchanged),
    returned as rows again. Why: on the small window batches of the attention aten runs a 1x1
    conv as one GEMM per window image, and the rows need no layout copies; the map view keeps
    the BN on its channels-last kernel (an ``(M, C, 1, 1)`` view takes a per-element loop,
    ~10x slower)."""
    conv = layer.conv
    out = F.linear(rows, conv.weight.flatten(1), conv.bias)
    return nhwc_rows(layer.bn(out.view(*bhw, -1).permute(0, 3, 1, 2)))


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention on one window batch ``(B, C, h, w)``.

    Head j attends over ``split_j(x) + out_{j-1}`` (paper Eq. 3), so the heads run one after
    another by construction. Scores are ``(q k^T) * key_dim^-0.5 + bias``; the bias comes from
    :class:`AttentionBias2d` for the window that actually occurs (exact on the pretraining
    window, offset-table resize otherwise). ``torch.baddbmm`` adds the bias and scales in one
    op.

    The heads work on the ``(B*h*w, C)`` pixel rows of the windows (a free view of a
    channels-last map, the layout :class:`LocalWindowAttention` partitions into), the layout
    of :class:`CascadedGroupAttentionDeploy` too: the 1x1 ConvBNs are GEMMs on rows
    (:func:`conv_bn_rows`), only q goes through a channels-last map for its depth-wise conv,
    and every gradient comes back in the layout of its forward tensor. The same function as
    the official NCHW formulation (test_efficientvit.py checks outputs, gradients and running
    statistics in training), whose 1x1 convs aten runs as one GEMM per window image and whose
    NCHW depth-wise backward on 7x7 windows is ~2x slower: forward + backward on the window
    batches of a 2x512x512 input, 1 thread, 1.4-1.55x faster than that formulation on the
    stride-16 maps of M0 / M4, 1.2x on the stride-64 ones
    (``tools/benchmarks/efficientvit_attention_train.py``).

    Args:
        dim: channels C (divisible by num_heads; value dim per head is C / num_heads).
        key_dim: query/key channels per head (16 in all official models).
        num_heads: h.
        table_size: (Rh, Rw) of the learned offset-bias table (the pretraining window).
        kernels: depth-wise kernel size on q, one per head.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, table_size: Size2d,
                 kernels: Sequence[int]):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'attention width {dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = dim // num_heads
        self.scale = key_dim ** -0.5
        self.qkvs = nn.ModuleList(
            ConvBN(self.val_dim, 2 * key_dim + self.val_dim) for _ in range(num_heads))
        self.dws = nn.ModuleList(
            ConvBN(key_dim, key_dim, k, groups=key_dim) for k in kernels[:num_heads])
        self.act = nn.ReLU(inplace=True)
        self.proj = ConvBN(self.val_dim * num_heads, dim, bn_weight_init=0.0)
        self.attention_bias = AttentionBias2d(num_heads, table_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` windows in, the same shape out as a channels-last map."""
        B, C, H, W = x.shape
        N = H * W
        bias = self.attention_bias((H, W)).unbind(0)  # one backward node for all heads
        rows = nhwc_rows(x)  # free for channels-last windows
        splits = rows.split(self.val_dim, dim=1)
        kd, vd = self.key_dim, self.val_dim
        outs: List[torch.Tensor] = []
        feat = splits[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + splits[i]
            q, k, v = conv_bn_rows(qkv, feat, (B, H, W)).split((kd, kd, vd), dim=1)
            q = q.reshape(B, H, W, kd).permute(0, 3, 1, 2)
            q = dw(q.contiguous(memory_format=torch.channels_last))
            attn = torch.baddbmm(bias[i], q.permute(0, 2, 3, 1).reshape(B, N, kd),
                                 k.reshape(B, N, kd).transpose(1, 2),
                                 alpha=self.scale).softmax(dim=-1)
            feat = torch.bmm(attn, v.reshape(B, N, vd)).view(B * N, vd)
            outs.append(feat)
        out = conv_bn_rows(self.proj, self.act(torch.cat(outs, dim=1)), (B, H, W))
        return out.view(B, H, W, C).permute(0, 3, 1, 2)

    @torch.no_grad()
    def fuse(self) -> 'CascadedGroupAttentionDeploy':
        return CascadedGroupAttentionDeploy(self)


def dw_conv_matrix_index(hw: Size2d, kernel: int, device=None) -> torch.Tensor:
    """(N, N) index into a flat k*k kernel (+1 zero slot) such that a depth-wise conv with
    zero padding on an (h, w) map equals ``out[c] = M[c] @ in[c] + b[c]`` with
    ``M[c] = cat(w[c].flatten(), 0)[index]``."""
    h, w = hw
    r = kernel // 2
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    dy = ys[None, :] - ys[:, None]
    dx = xs[None, :] - xs[:, None]
    inside = (dy.abs() <= r) & (dx.abs() <= r)
    return torch.where(inside, (dy + r) * kernel + (dx + r), kernel * kernel)


class CascadedGroupAttentionDeploy(nn.Module):
    """Inference form of :class:`CascadedGroupAttention`, numerically the same function.

    BNs are folded, 1x1 convs become ``nn.Linear`` on a ``(B, N, C)`` token view (free for
    channels-last input), the ``key_dim^-0.5`` scale is folded into the q depth-wise conv, and
    that conv is applied as one small matrix per channel (``bmm`` with the conv's (N, N)
    Toeplitz form for the window, cached like the attention bias, in the byte-bounded
    :class:`~mmeff.models.layers.TensorCache`): on CPU a oneDNN
    depth-wise conv on a 7x7 window costs ~50 us of call overhead, the matrix form ~10 us.
    Exports trace :meth:`_forward_nchw` instead (convs, the form graph runtimes run fastest).
    Under :func:`~mmeff.models.layers.is_compiling_for_cpu` the q conv is a conv on the token
    view (a channels-last map, no copy): TorchInductor neither folds the gathered matrices nor
    runs the per-channel products well (M0 compiled 1.86x ORT instead of 2.11x).
    """

    def __init__(self, src: CascadedGroupAttention):
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = src.num_heads, src.key_dim, src.val_dim
        self.qkvs = nn.ModuleList(conv1x1_to_linear(folded(m)) for m in src.qkvs)
        self.dws = nn.ModuleList()
        for m in src.dws:
            conv = folded(m)
            conv.weight.mul_(src.scale)
            conv.bias.mul_(src.scale)
            self.dws.append(conv)
        self.proj = conv1x1_to_linear(folded(src.proj))
        self.attention_bias = copy.deepcopy(src.attention_bias)
        self._cache = TensorCache()  # the matrices per window (bounded, shared budget)

    def _dw_matrices(self, hw: Size2d) -> List[torch.Tensor]:
        weights = [conv.weight for conv in self.dws]

        def make() -> List[torch.Tensor]:
            mats = []
            for w in weights:
                flat = F.pad(w.flatten(1), (0, 1))  # (kd, k*k + 1), last slot = 0
                mats.append(flat[:, dw_conv_matrix_index(hw, w.shape[-1], w.device)])
            return mats

        if (torch.is_grad_enabled() and weights[0].requires_grad) or not caching_allowed():
            return make()
        # (caching_allowed() first: torch.export's fake tensors have no data_ptr())
        return self._cache.get_or_make(
            (hw, weights[0].device, weights[0].dtype), make,
            stamp=tuple((w._version, w.data_ptr()) for w in weights))

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_graph_export():
            return self._forward_nchw(x)
        B, C, H, W = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(B, H * W, C)
        bias = self.attention_bias((H, W))
        compiling = is_compiling_for_cpu()
        mats = None if compiling else self._dw_matrices((H, W))
        kd, vd = self.key_dim, self.val_dim
        splits = tokens.split(vd, dim=-1)
        outs: List[torch.Tensor] = []
        feat = splits[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + splits[i]
            q, k, v = qkv(feat).split((kd, kd, vd), dim=-1)
            if compiling:
                q = dw(q.reshape(B, H, W, kd).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                q = q.reshape(B, H * W, kd)
            else:
                q = torch.baddbmm(dw.bias[:, None, None], mats[i],
                                  q.permute(2, 1, 0)).permute(2, 1, 0)
            attn = torch.baddbmm(bias[i], q, k.transpose(1, 2)).softmax(-1)
            feat = torch.bmm(attn, v)
            outs.append(feat)
        out = self.proj(torch.relu(torch.cat(outs, dim=-1)))
        return out.view(B, H, W, C).permute(0, 3, 1, 2)

    def _forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        """The export form: NCHW 1x1 and depth-wise convs, no token view. ONNX Runtime runs
        them in its blocked NCHWc layout next to the FFN convs; the token form's Transposes
        and Gemms, and the q conv as a gathered (N x N) matrix, each leave that layout
        (docs/deploy_speed.md)."""
        B, _, H, W = x.shape
        bias = self.attention_bias((H, W))
        kd, vd = self.key_dim, self.val_dim
        splits = x.chunk(self.num_heads, dim=1)
        outs: List[torch.Tensor] = []
        feat = splits[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + splits[i]
            q, k, v = F.conv2d(feat, qkv.weight[:, :, None, None], qkv.bias).split(
                (kd, kd, vd), dim=1)
            attn = (dw(q).flatten(2).transpose(1, 2) @ k.flatten(2) + bias[i]).softmax(dim=-1)
            feat = (v.flatten(2) @ attn.transpose(1, 2)).view(B, vd, H, W)
            outs.append(feat)
        return F.conv2d(torch.relu(torch.cat(outs, dim=1)), self.proj.weight[:, :, None, None],
                        self.proj.bias)


class LocalWindowAttention(nn.Module):
    """Cascaded group attention in non-overlapping windows of ``window_size`` (zero padding).

    The window actually used is ``(min(window_size, H), min(window_size, W))``: a map smaller
    than the window is one window of its own size (the 224x224 model's 4x4 stage-3 map, on
    which its 4x4 bias table was learned), never padded up to 7x7. Larger maps are padded at
    the bottom/right to a multiple of the window, as in the official code, and cropped back.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, window_size: int,
                 table_size: Size2d, kernels: Sequence[int]):
        super().__init__()
        self.window_size = window_size
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, table_size, kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        wh, ww = min(self.window_size, H), min(self.window_size, W)
        if (wh, ww) == (H, W):
            return self.attn(x)
        # partition through an NHWC view into windows whose pixel rows the attention works on:
        # free for channels-last maps (the training layout and the deploy path)
        x = x.permute(0, 2, 3, 1)
        pad_b, pad_r = (-H) % wh, (-W) % ww
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (H + pad_b) // wh, (W + pad_r) // ww
        x = x.reshape(B, nh, wh, nw, ww, C).transpose(2, 3).reshape(B * nh * nw, wh, ww, C)
        x = self.attn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x.reshape(B, nh, nw, wh, ww, C).transpose(2, 3).reshape(B, nh * wh, nw * ww, C)
        if pad_b or pad_r:
            x = x[:, :H, :W].contiguous()
        return x.permute(0, 3, 1, 2)


class SandwichBlock(nn.Module):
    """EfficientViT block: DWConv, FFN, window attention, DWConv, FFN (all residual)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, window_size: int,
                 table_size: Size2d, kernels: Sequence[int], drop_path: float = 0.0):
        super().__init__()
        self.dw0 = ResidualDWConv(dim, bn_weight_init=0.0, drop_path=drop_path)
        self.ffn0 = ResidualFFN(dim, 2 * dim, drop_path)
        self.mixer = LocalWindowAttention(dim, key_dim, num_heads, window_size, table_size,
                                          kernels)
        self.drop_path = drop_path_or_identity(drop_path)
        self.dw1 = ResidualDWConv(dim, bn_weight_init=0.0, drop_path=drop_path)
        self.ffn1 = ResidualFFN(dim, 2 * dim, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ffn0(self.dw0(x))
        x = x + self.drop_path(self.mixer(x))
        return self.ffn1(self.dw1(x))


class SqueezeExcite(nn.Module):
    """SE with 1x1 convs (bias), ReLU and sigmoid gate; squeeze width C/4 rounded to 8."""

    def __init__(self, channels: int, ratio: float = 0.25, divisor: int = 8):
        super().__init__()
        rd = max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class PatchMerging(nn.Module):
    """Inverted residual that halves the resolution: 1x1 (x4) - DW3x3/2 - SE - 1x1."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = 4 * dim
        self.conv1 = ConvBN(dim, hidden)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = ConvBN(hidden, hidden, 3, stride=2, groups=hidden)
        self.se = SqueezeExcite(hidden)
        self.conv3 = ConvBN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.conv3(self.se(x))


class SubsampleBlock(nn.Sequential):
    """Sandwich subsample block: (DWConv, FFN) at the input width, PatchMerging, (DWConv, FFN)
    at the output width. Named ``res1``/``patchmerge``/``res2`` as in timm."""

    def __init__(self, dim: int, out_dim: int, drop_path: float = 0.0):
        super().__init__()
        self.add_module('res1', nn.Sequential(ResidualDWConv(dim, drop_path=drop_path),
                                              ResidualFFN(dim, 2 * dim, drop_path)))
        self.add_module('patchmerge', PatchMerging(dim, out_dim))
        self.add_module('res2', nn.Sequential(ResidualDWConv(out_dim, drop_path=drop_path),
                                              ResidualFFN(out_dim, 2 * out_dim, drop_path)))


class PatchEmbed16(nn.Module):
    """Overlapping 16x patch embedding; can also return its stride-2/4/8 activations.

    Those intermediate maps (after ReLU; C/8, C/4 and C/2 channels) are what a standard FPN can
    use as the high-resolution levels EfficientViT otherwise lacks.
    """

    strides = (2, 4, 8, 16)

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        widths = (dim // 8, dim // 4, dim // 2, dim)
        chans = (in_channels,) + widths
        for i in range(4):
            self.add_module(f'conv{i + 1}', ConvBN(chans[i], chans[i + 1], 3, stride=2))
        self.act = nn.ReLU(inplace=True)
        self.channels = dict(zip(self.strides, widths))
        self.channels_last = False

    def fuse(self) -> 'PatchEmbed16':
        """Deploy form: the same (BN-folded) convs, but CPU activations switched to
        channels-last memory, the fast layout of every deployed layer (depth-wise convs skip
        oneDNN's reorders, attention reads (B, N, C) token views without copies)."""
        self.channels_last = True
        return self

    def forward(self, x: torch.Tensor,
                keep: Sequence[int] = ()) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Return the stride-16 map and the stride-``keep`` activations (ascending stride)."""
        if self.channels_last and x.device.type == 'cpu':
            x = x.contiguous(memory_format=torch.channels_last)
        kept = []
        x = self.act(self.conv1(x))
        if 2 in keep:
            kept.append(x)
        x = self.act(self.conv2(x))
        if 4 in keep:
            kept.append(x)
        x = self.act(self.conv3(x))
        if 8 in keep:
            kept.append(x)
        return self.conv4(x), kept


class EfficientViTStage(nn.Module):
    """One stage: an optional :class:`SubsampleBlock` then ``depth`` sandwich blocks."""

    def __init__(self, downsample: Optional[SubsampleBlock], blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)
