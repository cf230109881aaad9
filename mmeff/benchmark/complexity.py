"""Parameters and MACs, counted the way the papers count them.

MACs come from mmengine's ``FlopAnalyzer`` (fvcore's JIT tracer: one multiply-accumulate per
conv/linear/matmul weight use, which is what the papers call "FLOPs"/"MACs"), with three
additions so that attention is counted fully and fairly:

* ``matmul``/``bmm``/``baddbmm`` are counted from the *output* shape times the reduced dimension,
  so broadcast batch dimensions (heads) are never under-counted;
* ``scaled_dot_product_attention`` (a fused kernel, invisible to the default table) counts its
  two matmuls, ``B*H*Nq*Nk*(Dqk + Dv)``;
* normalisation layers are not counted by default: in the deploy graph BN is folded away, and
  counting them in an unfused reference model (timm) would make the two differ for no reason.
"""
from collections import Counter
from dataclasses import dataclass
from math import prod
from typing import Any, Dict, List, Sequence

import torch
from torch import nn


def _shape(value: Any) -> List[int]:
    return value.type().sizes()


def matmul_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of (batched, broadcasting) matmul: every output element costs K multiply-adds."""
    a_shape = _shape(inputs[0])
    return prod(_shape(outputs[0])) * a_shape[-1]


def baddbmm_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """``baddbmm(input, b1, b2)``: the batched product of b1 and b2."""
    return prod(_shape(outputs[0])) * _shape(inputs[1])[-1]


def sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)``: Q @ K^T and A @ V."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


EXTRA_HANDLES = {
    'aten::matmul': matmul_macs,
    'aten::bmm': matmul_macs,
    'aten::baddbmm': baddbmm_macs,
    'aten::scaled_dot_product_attention': sdpa_macs,
}
NORM_OPS = ('aten::batch_norm', 'aten::group_norm', 'aten::layer_norm', 'aten::instance_norm')


@dataclass
class Complexity:
    """Counts for one model at one input shape."""
    params: int
    macs: int
    by_operator: Dict[str, int]
    input_shape: Sequence[int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen = {id(p): p.numel() for p in model.parameters()}
    return sum(seen.values())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224),
               count_norms: bool = False) -> Complexity:
    """Trace ``model`` once at ``input_shape`` and count parameters and MACs.

    The model is put in eval mode. Unsupported ops (elementwise, reshapes) are ignored, as in
    the papers.
    """
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.complexity_analysis import _DEFAULT_SUPPORTED_FLOP_OPS

    model.eval()
    param = next(model.parameters())
    x = torch.zeros(*input_shape, device=param.device, dtype=param.dtype)
    handles = {**_DEFAULT_SUPPORTED_FLOP_OPS, **EXTRA_HANDLES}
    if not count_norms:  # (a None handle does not override a default one: drop them instead)
        handles = {op: h for op, h in handles.items() if op not in NORM_OPS}
    analyzer = FlopAnalyzer(model, (x,)).clear_op_handles().set_op_handle(**handles)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    by_op = Counter({k: int(v) for k, v in analyzer.by_operator().items()})
    return Complexity(params=count_params(model), macs=int(analyzer.total()),
                      by_operator=dict(by_op), input_shape=tuple(input_shape))
