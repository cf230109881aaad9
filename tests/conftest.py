"""Helpers shared by the test suite: gradient checks, default-scope hygiene and the toy
models that test the deploy and benchmark machinery without depending on any family."""
from typing import Sequence, Tuple

import pytest
import torch
from torch import nn

from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.classifiers.classifier_net import MobileClassifierNet
from mmeff.models.layers import AttentionBias2d, BNLinear, ConvBN, DropPath, LayerScale, LinearBN


def projection_loss(outputs: Sequence[torch.Tensor], seed: int = 0) -> torch.Tensor:
    """A scalar that depends on every output element: each map times a fixed random tensor.

    ``o.mean()`` and ``o.square().mean()`` are constants after a GroupNorm(1, C) / LayerNorm
    with unit affine (mean 0, mean square 1 by construction), so their gradients are rounding
    noise (~1e-15, sometimes exactly 0) and a gradient check on them cannot fail on a broken
    path; a random projection has an O(1) gradient through every weight.
    """
    gen = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outputs)


@pytest.fixture(scope='session')
def project():
    return projection_loss


def assert_nonzero_finite_grads(named_parameters, min_abs: float = 1e-3) -> None:
    """Every parameter got a finite gradient, and every weight (not bias) one well above
    rounding noise (max |g| > min_abs; ~1 on the perturbed models the tests use).

    Biases are exempt from the size check: a bias followed by a training-mode BN (subtracted
    with the batch mean), or added to attention keys (softmax is shift-invariant), has a zero
    gradient by mathematics, not by a broken path.
    """
    for name, p in named_parameters:
        assert p.grad is not None, f'{name}: no gradient'
        assert torch.isfinite(p.grad).all(), f'{name}: non-finite gradient'
        if not name.endswith('bias'):
            assert p.grad.abs().max() > min_abs, f'{name}: gradient {p.grad.abs().max():.3g}'


@pytest.fixture(scope='session')
def grads_ok():
    return assert_nonzero_finite_grads


def _drop_new_default_scopes():
    from mmengine.registry import DefaultScope
    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        del DefaultScope._instance_dict[name]


# mmengine's Runner makes its config's default_scope (e.g. 'mmeff') the global default scope and
# keeps it after the run; a later test that builds MMDet parts directly would then look in
# mmeff's registries. These drop the DefaultScope instances a test (or a module's fixtures,
# e.g. one training run shared by several tests) created.
no_default_scope_left_by_test = pytest.fixture(autouse=True)(_drop_new_default_scopes)
no_default_scope_left_by_module = pytest.fixture(autouse=True, scope='module')(
    _drop_new_default_scopes)


# ----------------------------------------------------------------------- toy models
# Fixtures: a tiny model built only from mmeff's shared layers, to test the export machinery
# without depending on any family.
# 
# It has everything the deploy path must deal with: ConvBN / LinearBN / BNLinear pairs to fold,
# DropPath and Dropout to remove, layer scales, and an attention bias learned on a 4x4 grid
# (resized bicubically at other sizes, frozen for export).
class ToyAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads, self.dim_head = heads, dim // heads
        self.qkv = LinearBN(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attention_bias = AttentionBias2d(heads, (4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.heads, self.dim_head).permute(
            2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.dim_head ** -0.5 + self.attention_bias((h, w))
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class ToyBlock(nn.Module):
    def __init__(self, dim: int, attention: bool):
        super().__init__()
        self.mixer = ToyAttention(dim) if attention else ConvBN(dim, dim, 3, groups=dim)
        self.ls = LayerScale(dim, 1e-5, channels_first=True)
        self.drop_path = DropPath(0.1)
        self.mlp = nn.Sequential(ConvBN(dim, dim * 2), nn.GELU(), nn.Dropout(0.1),
                                 ConvBN(dim * 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls(self.mixer(x)))
        return x + self.drop_path(self.mlp(x))


class ToyBackbone(MobileBackbone):
    """Strides 4/8/16/32; attention in the last stage (4x4 grid at 128x128)."""
    family = 'Toy'
    arch_zoo = {'t': {'widths': (8, 16, 24, 32)}}
    arch_keys = ('widths',)

    def __init__(self, arch='t', out_indices=(0, 1, 2, 3), attention: bool = True, **kwargs):
        super().__init__(out_indices, **kwargs)
        self.arch_name, settings = self.resolve_arch(arch)
        widths = settings['widths']
        self.set_stages(widths, (4, 8, 16, 32))
        self.stem = nn.Sequential(ConvBN(3, widths[0], 3, 2), nn.ReLU(),
                                  ConvBN(widths[0], widths[0], 3, 2))
        stages, prev = [], widths[0]
        for i, w in enumerate(widths):
            down = nn.Identity() if i == 0 else ConvBN(prev, w, 3, 2)
            last = i == len(widths) - 1
            stages.append(nn.Sequential(down, ToyBlock(w, attention=attention and last)))
            prev = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.run_block(stage, x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class ToyHead(nn.Module):
    def __init__(self, dim: int = 32, num_classes: int = 10):
        super().__init__()
        self.head = BNLinear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))


def toy_classifier() -> MobileClassifierNet:
    return MobileClassifierNet(ToyBackbone(out_indices=(3,)), ToyHead()).eval()


class FunctionalBN(nn.Module):
    """A batch norm called functionally: no module for the deploy path to fold."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer('mean', torch.zeros(dim))
        self.register_buffer('var', torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(x, self.mean, self.var, training=False)


def toy_classifier_with_functional_bn() -> MobileClassifierNet:
    model = toy_classifier()
    model.backbone.stages[0].append(FunctionalBN(8))
    return model


class Toys:
    """Factories handed to tests by the ``toys`` fixture."""
    Backbone = ToyBackbone

    @staticmethod
    def classifier() -> MobileClassifierNet:
        return toy_classifier()

    @staticmethod
    def classifier_with_functional_bn() -> MobileClassifierNet:
        return toy_classifier_with_functional_bn()


@pytest.fixture
def toys() -> Toys:
    return Toys()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small shared machine, two spinning threads per process make
    tiny convs ~100x slower when other jobs load the cores. Export/benchmark tests use it
    (``pytestmark``); it restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
