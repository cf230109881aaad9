"""Residual-branch helpers: layer scale and stochastic depth.

Stochastic depth is timm's ``DropPath`` in every family (timm's reference models use it too,
so training-mode draws match theirs); the deploy path recognises it by class and removes it.
"""
import torch
from timm.layers import DropPath
from torch import nn


class LayerScale(nn.Module):
    """Learned per-channel residual scale (CaiT), for (B, N, C) tokens or (B, C, H, W) maps.

    The parameter is stored flat as ``gamma`` of shape (C,) whatever the layout, so that the
    official (C,), (C, 1, 1) and (C, 1) variants all convert to one key.
    """

    def __init__(self, dim: int, init_value: float = 1e-5, channels_first: bool = False):
        super().__init__()
        self.channels_first = channels_first
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gamma[:, None, None] if self.channels_first else self.gamma)


def drop_path_or_identity(rate: float) -> nn.Module:
    """``DropPath(rate)``, or an ``nn.Identity`` when ``rate`` is 0 (nothing to drop)."""
    return DropPath(rate) if rate > 0 else nn.Identity()


def is_drop_path(module: nn.Module) -> bool:
    """Whether ``module`` is stochastic depth (removed by the deploy path)."""
    return isinstance(module, DropPath)


def drop_path_rates(drop_path_rate: float, depths) -> list:
    """Linearly increasing stochastic-depth rate per block, split into per-stage lists."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out
