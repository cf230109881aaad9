"""Numerical parity between a reference model and an exported one, and test-weight helpers.

Relative error is ``max|got - ref| / max|ref|`` per output (a scale-free figure that does not
blow up on outputs near zero); the report gives the worst output.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: default tolerance on the relative error, by precision
TOLERANCE = {'fp32': 1e-4, 'fp16': 1e-2}


@dataclass
class Parity:
    """Worst absolute and relative error over all outputs, plus per-output figures."""
    max_abs: float
    max_rel: float
    per_output: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def ok(self, tolerance: float) -> bool:
        return bool(np.isfinite(self.max_rel)) and self.max_rel <= tolerance

    def text(self) -> str:
        return f'max abs {self.max_abs:.3e}, max rel {self.max_rel:.3e}'


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def compare(reference: Sequence, got: Sequence, names: Sequence[str]) -> Parity:
    """Compare two equally long lists of arrays/tensors; shapes must match."""
    if len(reference) != len(got):
        raise ValueError(f'exported model returns {len(got)} outputs, the reference '
                         f'{len(reference)}')
    per, worst_abs, worst_rel = {}, 0.0, 0.0
    for name, ref, out in zip(names, reference, got):
        ref, out = _np(ref), _np(out)
        if ref.shape != out.shape:
            raise ValueError(f'output {name!r}: exported shape {out.shape} != reference '
                             f'{ref.shape}')
        abs_err = float(np.abs(ref - out).max()) if ref.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        rel_err = abs_err / max(scale, 1e-12)
        per[name] = {'max_abs': abs_err, 'max_rel': rel_err, 'ref_scale': scale}
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return Parity(worst_abs, worst_rel, per)


@torch.no_grad()
def randomize_for_parity(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN statistics/affines, layer scales and bias tables non-trivial random values.

    Freshly initialised models have BN at identity, layer scales at 1e-5 and zero bias
    tables, which would let a broken fusion or a missing bias pass a parity check. Used by
    tests and the export-all script (no real weights are downloaded).
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(shape, low, high):
        return torch.rand(shape, generator=gen) * (high - low) + low

    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(rand(m.running_mean.shape, -0.2, 0.2))
            m.running_var.copy_(rand(m.running_var.shape, 0.5, 1.5))
            if m.affine:
                m.weight.copy_(rand(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(rand(m.bias.shape, -0.2, 0.2))
        for name, p in m.named_parameters(recurse=False):
            if name == 'gamma' or name.startswith('layer_scale'):
                p.copy_(rand(p.shape, 0.05, 0.3))
            elif name == 'table':  # AttentionBias2d
                p.copy_(rand(p.shape, -1.0, 1.0))
        clear = getattr(m, 'clear_cache', None)
        if callable(clear):
            clear()
    return model


def example_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A reproducible normalised-image-like input."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def output_list(out) -> List[torch.Tensor]:
    from mmeff.deploy.parts import flatten_outputs
    return flatten_outputs(out)
