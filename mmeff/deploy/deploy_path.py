"""The deploy path every export goes through, and the checks that prove it was taken.

``deploy(module, input_shape)`` = mmeff's :func:`~mmeff.models.layers.fusion` (BN folded into our
convs/linears, DropPath/Dropout removed, attention biases frozen as constants for the export
resolution) + the same BN folding for MMCV ``ConvModule`` s of necks and heads, after
SyncBN has been reverted to plain BN (exports are single-device). A BN with no conv in front
of it (e.g. a dense backbone's output norm) becomes a per-channel affine ``x * s + t``, and
GroupNorms reduce one axis at a time (:class:`StableGroupNorm`: same function, accurate in
runtimes that sum a whole group in one pass).

``deploy_violations`` then inspects what would be exported: the traced TorchScript graph must
hold no batch norm, dropout, random op or bicubic resize, and the attention-bias tables must be
out of the computation (the outputs stay finite when every table is set to NaN:
:func:`nan_bias_tables`).
"""
import contextlib
from collections import Counter
from typing import Dict, Iterator, List, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmeff.models.layers.attention_bias import AttentionBias2d
from mmeff.models.layers.conv_norm import ChannelAffine, fuse_conv_bn
from mmeff.models.layers.fusion import fuse
from mmeff.models.layers.scale_and_drop import is_drop_path

#: TorchScript node kinds that must not survive the deploy path, with the reason
FORBIDDEN_TORCH_OPS: Dict[str, str] = {
    'aten::batch_norm': 'BatchNorm not folded',
    'aten::dropout': 'dropout left in the graph',
    'aten::feature_dropout': 'dropout left in the graph',
    'aten::bernoulli': 'stochastic depth left in the graph (CoreML cannot convert it)',
    'aten::bernoulli_': 'stochastic depth left in the graph (CoreML cannot convert it)',
    'aten::rand': 'random op in the graph',
    'aten::rand_like': 'random op in the graph',
    'aten::upsample_bicubic2d': 'bicubic resize in the graph (attention bias not frozen; '
                                'CoreML cannot convert it)',
}


def fold_conv_modules(module: nn.Module) -> int:
    """Fold the BN of every MMCV-style ``ConvModule`` (conv before norm) into its conv."""
    folded = 0
    for m in module.modules():
        norm_name = getattr(m, 'norm_name', None)
        order = getattr(m, 'order', None)
        conv = getattr(m, 'conv', None)
        if not (norm_name and getattr(m, 'with_norm', False) and order and
                isinstance(conv, nn.Conv2d)):
            continue
        norm = getattr(m, norm_name)
        if not isinstance(norm, _BatchNorm) or list(order).index('conv') > \
                list(order).index('norm'):
            continue
        m.conv = fuse_conv_bn(conv, norm)
        setattr(m, norm_name, nn.Identity())
        folded += 1
    return folded


def standalone_bns_to_affine(module: nn.Module) -> int:
    """Replace every BatchNorm still present (no conv before it, e.g. a dense output norm)
    by a :class:`ChannelAffine`; returns how many."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and child.track_running_stats and \
                    child.running_mean is not None:
                setattr(parent, name, ChannelAffine(child))
                replaced += 1
    return replaced


class StableGroupNorm(nn.Module):
    """``nn.GroupNorm`` with mean and variance reduced one axis at a time.

    Same function; written for runtimes that sum a whole group in one fp32 pass. ONNX
    Runtime's InstanceNormalization/ReduceMean over a GroupNorm(1, 48) of a 128x128 map (the
    stride-4 output norm of a dense EfficientFormer at 512x512) is off by ~1e-3 absolute
    (2e-4 relative); reducing W, then H, then the channels of the group keeps every partial sum
    short and the export within 1e-6 of PyTorch. It matters even more for fp16 runtimes.
    """

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.num_groups, self.eps = gn.num_groups, gn.eps
        self.weight = gn.weight if gn.affine else None
        self.bias = gn.bias if gn.affine else None

    @staticmethod
    def _mean(t: torch.Tensor, first: int) -> torch.Tensor:
        """Mean over dims ``first..`` (keepdim), innermost first."""
        for dim in range(t.dim() - 1, first - 1, -1):
            t = t.mean(dim, keepdim=True)
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        g = self.num_groups
        # one group: reduce (C, H, W) of x itself; else (C/g, H, W) of the grouped view
        xg, first = (x, 1) if g == 1 else (x.reshape(shape[0], g, shape[1] // g, *shape[2:]), 2)
        centred = xg - self._mean(xg, first)
        y = centred * torch.rsqrt(self._mean(centred * centred, first) + self.eps)
        y = y if g == 1 else y.reshape(shape)
        if self.weight is None:
            return y
        affine = (1, -1) + (1,) * (x.dim() - 2)
        return y * self.weight.reshape(affine) + self.bias.reshape(affine)


def stable_group_norms(module: nn.Module) -> int:
    """Replace every ``nn.GroupNorm`` by a :class:`StableGroupNorm`; returns how many."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, StableGroupNorm(child))
                replaced += 1
    return replaced


def revert_sync_bn(module: nn.Module) -> nn.Module:
    from mmengine.model import revert_sync_batchnorm
    return revert_sync_batchnorm(module)


def deploy(module: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """Put ``module`` on the deploy path for a fixed input shape (N, C, H, W); returns it."""
    module = revert_sync_bn(module)
    module.eval()
    fuse(module, input_shape)
    fold_conv_modules(module)
    standalone_bns_to_affine(module)
    stable_group_norms(module)
    return module.eval()


def attention_biases(module: nn.Module) -> List[AttentionBias2d]:
    return [m for m in module.modules() if isinstance(m, AttentionBias2d)]


def traced_op_kinds(traced: torch.jit.ScriptModule) -> Counter:
    """Histogram of node kinds of a traced module (submodule calls inlined)."""
    return Counter(node.kind() for node in traced.inlined_graph.nodes())


@contextlib.contextmanager
def nan_bias_tables(module: nn.Module) -> Iterator[None]:
    """Set every attention-bias table to NaN inside the block (restored after).

    A forward inside this block stays finite only if no table takes part in it, i.e. every
    bias is a frozen constant: the export check costs no extra forward pass.
    """
    biases = attention_biases(module)
    saved = [b.table.detach().clone() for b in biases]
    try:
        for b in biases:
            b.table.data.fill_(float('nan'))
            b.clear_cache()
        yield
    finally:
        for b, table in zip(biases, saved):
            b.table.data.copy_(table)
            b.clear_cache()


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def deploy_violations(module: nn.Module, traced: torch.jit.ScriptModule,
                      biases_constant: bool) -> List[str]:
    """Everything that shows the deploy path was not (fully) taken; empty when clean.

    Args:
        module: the deployed module.
        traced: its traced graph.
        biases_constant: whether a forward under :func:`nan_bias_tables` stayed finite.
    """
    problems = []
    kinds = traced_op_kinds(traced)
    for kind, reason in FORBIDDEN_TORCH_OPS.items():
        if kinds.get(kind):
            problems.append(f'{kinds[kind]} x {kind}: {reason}')
    leftover = [type(m).__name__ for m in module.modules()
                if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d)) or is_drop_path(m)]
    if leftover:
        problems.append(f'modules left unfused: {dict(Counter(leftover))}')
    if not biases_constant:
        problems.append('attention biases are still computed from their tables '
                        '(not frozen for this input size)')
    return problems
