"""EfficientViT (Liu et al., CVPR 2023): the variants M0-M5 of Table 1.

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
