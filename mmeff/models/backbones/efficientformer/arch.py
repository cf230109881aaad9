"""EfficientFormer (Li et al., NeurIPS 2022): the variants of Table 6 and the arch-dict validation.

The one table of variants of this family: the backbone, the converter (arch guessing), the
model zoo and the benchmark all read it from here.
"""
import math
from numbers import Integral
from typing import Dict

#: Table 6 of the paper (checked against timm 1.0.31's efficientformer.py and the official
#: repo). ``num_vit``: how many blocks, counted from the END of the network, are MB3D.
ARCH_SETTINGS: Dict[str, dict] = {
    'l1': dict(widths=[48, 96, 224, 448], depths=[3, 2, 6, 4], num_vit=1),
    'l3': dict(widths=[64, 128, 320, 512], depths=[4, 4, 12, 6], num_vit=4),
    'l7': dict(widths=[96, 192, 384, 768], depths=[6, 6, 18, 8], num_vit=8),
}
#: optional arch-dict keys and their Table-6 values
ARCH_DEFAULTS = dict(mlp_ratio=4.0, pool_size=3)


def validate_arch(settings: dict) -> dict:
    """Check a resolved arch dict and fill optional keys; ValueError naming what is wrong."""
    unknown = sorted(set(settings) - {'widths', 'depths', 'num_vit'} - set(ARCH_DEFAULTS))
    if unknown:
        raise ValueError(f'EfficientFormer arch dict has unknown keys {unknown}; allowed keys: '
                         f"widths, depths, num_vit (required), {sorted(ARCH_DEFAULTS)} (optional)")
    settings = {**ARCH_DEFAULTS, **settings}
    for key in ('widths', 'depths'):
        value = settings[key]
        if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(
                isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in value):
            raise ValueError(f'EfficientFormer arch {key!r} must be 4 positive ints (one per '
                             f'stage), got {value!r}')
        settings[key] = [int(v) for v in value]
    if settings['widths'][0] < 2:
        raise ValueError('EfficientFormer widths[0] must be >= 2 (the stem halves it), got '
                         f"{settings['widths'][0]}")
    num_vit, depths = settings['num_vit'], settings['depths']
    if not isinstance(num_vit, Integral) or isinstance(num_vit, bool) or num_vit < 0:
        raise ValueError(f'EfficientFormer num_vit must be an int >= 0, got {num_vit!r}')
    if num_vit > depths[2] + depths[3]:
        raise ValueError(
            f'EfficientFormer num_vit={num_vit} exceeds the blocks of stages 3 and 4 '
            f'({depths[2]} + {depths[3]} = {depths[2] + depths[3]}); MB3D blocks are only '
            'allowed in the last two stages (paper §4.2)')
    if settings['pool_size'] % 2 != 1 or settings['pool_size'] < 1:
        raise ValueError(f"pool_size must be a positive odd int, got {settings['pool_size']!r}")
    if settings['mlp_ratio'] <= 0:
        raise ValueError(f"mlp_ratio must be positive, got {settings['mlp_ratio']!r}")
    settings['num_vit'] = int(num_vit)
    return settings
