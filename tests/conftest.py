"""Helpers shared by the test suite."""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def perturb_state(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm, BN statistic, layer scale and bias table non-trivial values.

    Freshly initialised models have BN mean 0 / var 1, unit affines and 1e-5 layer scales, which
    hide mistakes in conversion and folding; this makes every such tensor matter.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand_like(t, low, high):
        return torch.rand(t.shape, generator=gen, dtype=t.dtype) * (high - low) + low

    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.running_mean.copy_(rand_like(module.running_mean, -0.2, 0.2))
            module.running_var.copy_(rand_like(module.running_var, 0.5, 1.5))
    for name, p in model.named_parameters():
        leaf = name.rsplit('.', 1)[-1]
        if leaf == 'gamma' or (p.dim() == 1 and leaf == 'weight' and 'norm' in name) or \
                (p.dim() == 1 and leaf == 'weight' and '.bn.' in name):
            p.copy_(rand_like(p, 0.5, 1.5))
        elif p.dim() == 1 and leaf == 'bias':
            p.copy_(rand_like(p, -0.2, 0.2))
        elif leaf in ('table', 'attention_biases'):
            p.copy_(rand_like(p, -1.0, 1.0))
    return model


@pytest.fixture(scope='session')
def perturb():
    return perturb_state


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
