"""EfficientViT (Liu et al., CVPR 2023): the variants M0-M5 of Table 1 and the arch-dict
validation.

The one table of variants of this family: the backbone, the converter (arch guessing), the
model zoo and the benchmark all read it from here.
"""
from typing import Dict

#: Table 1 of the paper + the released q kernels. Keys: widths C_i, depths L_i, heads H_i,
#: q depth-wise kernel per head (the first H_i entries are used in every stage).
EFFICIENTVIT_ARCHS: Dict[str, dict] = {
    'm0': dict(embed_dims=(64, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4),
               kernels=(5, 5, 5, 5)),
    'm1': dict(embed_dims=(128, 144, 192), depths=(1, 2, 3), num_heads=(2, 3, 3),
               kernels=(7, 5, 3, 3)),
    'm2': dict(embed_dims=(128, 192, 224), depths=(1, 2, 3), num_heads=(4, 3, 2),
               kernels=(7, 5, 3, 3)),
    'm3': dict(embed_dims=(128, 240, 320), depths=(1, 2, 3), num_heads=(4, 3, 4),
               kernels=(5, 5, 5, 5)),
    'm4': dict(embed_dims=(128, 256, 384), depths=(1, 2, 3), num_heads=(4, 4, 4),
               kernels=(7, 5, 3, 3)),
    'm5': dict(embed_dims=(192, 288, 384), depths=(1, 3, 4), num_heads=(3, 3, 4),
               kernels=(7, 5, 3, 3)),
}

#: optional arch-dict keys and the value of every released model
ARCH_DEFAULTS = dict(key_dim=16)


def validate_arch(settings: dict) -> dict:
    """Check an arch dict; return it with int tuples and ``key_dim`` filled in (ValueError
    naming what is wrong)."""
    dims, depths, heads, kernels = (tuple(int(v) for v in settings[k])
                                    for k in ('embed_dims', 'depths', 'num_heads', 'kernels'))
    if not len(dims) == len(depths) == len(heads) or not dims:
        raise ValueError(f'EfficientViT arch: embed_dims, depths and num_heads need one '
                         f'entry per stage, got {len(dims)}, {len(depths)}, {len(heads)}')
    if dims[0] % 8:
        raise ValueError(f'EfficientViT arch: embed_dims[0]={dims[0]} must be divisible '
                         'by 8 (the patch embedding uses C/8, C/4, C/2 channels)')
    for d, h in zip(dims, heads):
        if h < 1 or d % h:
            raise ValueError(f'EfficientViT arch: width {d} is not divisible by '
                             f'num_heads={h}; choose heads that divide the width')
    if min(depths) < 1:
        raise ValueError(f'EfficientViT arch: every stage needs depth >= 1, got {depths}')
    if len(kernels) < max(heads) or any(k < 1 or k % 2 == 0 for k in kernels):
        raise ValueError(f'EfficientViT arch: kernels={kernels} needs one odd size per head '
                         f'(at least {max(heads)} entries)')
    key_dim = int(settings.get('key_dim', ARCH_DEFAULTS['key_dim']))
    return dict(embed_dims=dims, depths=depths, num_heads=heads, kernels=kernels,
                key_dim=key_dim)
