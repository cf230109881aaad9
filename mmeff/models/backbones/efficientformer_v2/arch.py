"""EfficientFormerV2 (Li et al., ICCV 2023): the variants S0/S1/S2/L and the arch-dict validation.

The one table of variants of this family: the backbone, the converter (arch guessing), the
model zoo and the benchmark all read it from here.
"""
import numbers
from typing import Dict, Sequence, Tuple

# (widths, depths, FFN expansion ratio of every block, attention blocks at the end of stages 3-4)
ARCH_SETTINGS: Dict[str, dict] = {
    's0': dict(widths=(32, 48, 96, 176), depths=(2, 2, 6, 4), num_attn=2,
               mlp_ratios=((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    's1': dict(widths=(32, 48, 120, 224), depths=(3, 3, 9, 6), num_attn=2,
               mlp_ratios=((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4),
                           (4, 4, 3, 3, 4, 4))),
    's2': dict(widths=(32, 64, 144, 288), depths=(4, 4, 12, 8), num_attn=4,
               mlp_ratios=((4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                           (4, 4, 3, 3, 3, 3, 4, 4))),
    'l': dict(widths=(40, 80, 192, 384), depths=(5, 5, 15, 10), num_attn=6,
              mlp_ratios=((4, 4, 4, 4, 4), (4, 4, 4, 4, 4),
                          (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                          (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}

#: stochastic depth the published ImageNet models were trained with
PRETRAIN_DROP_PATH: Dict[str, float] = {'s0': 0.0, 's1': 0.0, 's2': 0.02, 'l': 0.1}

ARCH_KEYS = ('widths', 'depths', 'mlp_ratios', 'num_attn')


def _int_tuple(value, name: str, length: int) -> Tuple[int, ...]:
    if not isinstance(value, Sequence) or len(value) != length or \
            not all(isinstance(v, numbers.Integral) and v > 0 for v in value):
        raise ValueError(f'EfficientFormerV2 arch {name!r} must be {length} positive ints, '
                         f'got {value!r}')
    return tuple(int(v) for v in value)


def validate_arch(settings: dict) -> dict:
    """Validate an arch dict and return it with tuples everywhere (per-block mlp ratios)."""
    widths = _int_tuple(settings['widths'], 'widths', 4)
    depths = _int_tuple(settings['depths'], 'depths', 4)
    if widths[0] % 2:
        raise ValueError(f'EfficientFormerV2 widths[0] must be even (the stem uses half of it), '
                         f'got {widths[0]}')
    num_attn = settings['num_attn']
    if not isinstance(num_attn, numbers.Integral) or not 0 <= num_attn <= min(depths[2:]):
        raise ValueError(f"EfficientFormerV2 arch 'num_attn' (attention blocks at the end of "
                         f'stages 3 and 4) must be an int in 0..{min(depths[2:])}, got '
                         f'{num_attn!r}')
    ratios = settings['mlp_ratios']
    if isinstance(ratios, numbers.Real):
        ratios = (ratios,) * 4
    if not isinstance(ratios, Sequence) or len(ratios) != 4:
        raise ValueError("EfficientFormerV2 arch 'mlp_ratios' must be a number or 4 entries "
                         f'(a number or one per block for each stage), got {ratios!r}')
    per_block = []
    for i, (r, d) in enumerate(zip(ratios, depths)):
        r = (r,) * d if isinstance(r, numbers.Real) else tuple(r)
        if len(r) != d or not all(isinstance(v, numbers.Real) and v > 0 for v in r):
            raise ValueError(f"EfficientFormerV2 arch 'mlp_ratios[{i}]' must be a positive "
                             f'number or {d} of them (stage depth), got {ratios[i]!r}')
        per_block.append(tuple(r))
    return dict(widths=widths, depths=depths, mlp_ratios=tuple(per_block),
                num_attn=int(num_attn))
