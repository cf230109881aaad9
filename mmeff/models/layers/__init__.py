"""Building blocks shared by the three backbone families."""
from .attention_bias import AttentionBias2d, relative_offset_index, resize_offset_table
from .conv_norm import (BNLinear, ConvBN, LinearBN, folded, fuse_bn_linear, fuse_conv_bn,
                        fuse_linear_bn)
from .scale_and_drop import LayerScale, drop_path_rates

__all__ = [
    'AttentionBias2d', 'relative_offset_index', 'resize_offset_table', 'BNLinear', 'ConvBN',
    'LinearBN', 'folded', 'fuse_bn_linear', 'fuse_conv_bn', 'fuse_linear_bn', 'LayerScale',
    'drop_path_rates'
]
