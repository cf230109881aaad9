"""Building blocks shared by the three backbone families."""
from mmeff.models.layers.attention_bias import AttentionBias2d, relative_offset_index, resize_offset_table
from mmeff.models.layers.conv_norm import (BNLinear, ConvBN, LinearBN, folded, fuse_bn_linear, fuse_conv_bn,
                        fuse_linear_bn)
from mmeff.models.layers.scale_and_drop import LayerScale, drop_path_rates

__all__ = [
    'AttentionBias2d', 'relative_offset_index', 'resize_offset_table', 'BNLinear', 'ConvBN',
    'LinearBN', 'folded', 'fuse_bn_linear', 'fuse_conv_bn', 'fuse_linear_bn', 'LayerScale',
    'drop_path_rates'
]
