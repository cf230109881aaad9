"""Helpers for parity tests and benchmarks (not used by the models themselves)."""
import re
from typing import Dict

import torch
from torch import nn

from mmeff.models.layers import AttentionBias2d


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm real statistics and affines and every attention-bias table random
    values, in place.

    Fresh BNs are identities and residual branches often start with a zero BN weight, bias
    tables start at zero: comparisons on freshly built models would pass even with those parts
    wired wrongly. Works on mmeff and timm models (timm's bias tables are plain parameters
    named ``*attention_biases``).
    """
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        return (torch.rand(t.shape, generator=g) * scale + offset).to(t)

    def randn(t: torch.Tensor, scale: float) -> torch.Tensor:
        return (torch.randn(t.shape, generator=g) * scale).to(t)

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.affine:
                module.weight.copy_(rand(module.weight, 1.0, 0.5))
                module.bias.copy_(randn(module.bias, 0.1))
            if module.track_running_stats:
                module.running_mean.copy_(randn(module.running_mean, 0.1))
                module.running_var.copy_(rand(module.running_var, 1.0, 0.5))
        elif isinstance(module, AttentionBias2d):
            module.table.copy_(randn(module.table, 1.0))
    for name, param in model.named_parameters():
        if name.endswith('attention_biases'):
            param.copy_(randn(param, 1.0))
    return model


def efficientvit_official_layout(timm_state_dict: Dict[str, torch.Tensor]
                                 ) -> Dict[str, torch.Tensor]:
    """Rename a timm ``efficientvit_m*`` state dict to the microsoft/Cream release layout.

    Written from the two layouts directly, independently of mmeff's converter, so that tests
    can make release-format files without downloading them. Adds the derived
    ``attention_bias_idxs`` buffers the release files carry (the converter must drop them).
    """
    parts = ('res1', 'patchmerge', 'res2')
    out = {}
    for key, value in timm_state_dict.items():
        key = re.sub(r'^patch_embed\.conv(\d)\.',
                     lambda m: f'patch_embed.{2 * (int(m.group(1)) - 1)}.', key)
        key = re.sub(r'^stages\.0\.blocks\.(\d+)\.', r'blocks1.\1.', key)
        key = re.sub(r'^stages\.(\d)\.downsample\.(res1|patchmerge|res2)\.',
                     lambda m: f'blocks{int(m.group(1)) + 1}.{parts.index(m.group(2))}.', key)
        key = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.',
                     lambda m: f'blocks{int(m.group(1)) + 1}.{int(m.group(2)) + 3}.', key)
        key = re.sub(r'\.conv\.weight$', '.c.weight', key)
        key = key.replace('head.linear.', 'head.l.')
        out[key] = value
        if key.endswith('attention_biases'):
            n = value.shape[1]
            out[key[:-len('attention_biases')] + 'attention_bias_idxs'] = torch.zeros(
                n, n, dtype=torch.long)
    return out
