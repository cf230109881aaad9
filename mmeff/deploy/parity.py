"""Numerical parity between a reference model and an exported one (random test weights that
make a wrong fold visible: :func:`mmeff.testing.randomize_`).

Relative error is ``max|got - ref| / max|ref|`` per output (a scale-free figure that does not
blow up on outputs near zero); the report gives the worst output.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch

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


def example_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A reproducible normalised-image-like input."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def output_list(out) -> List[torch.Tensor]:
    from mmeff.deploy.parts import flatten_outputs
    return flatten_outputs(out)
