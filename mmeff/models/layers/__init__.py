"""Building blocks shared by the three backbone families."""
from mmeff.models.layers.activations import GELU2d
from mmeff.models.layers.attention_bias import AttentionBias2d, relative_offset_index, resize_offset_table
from mmeff.models.layers.conv_norm import (BNLinear, ChannelAffine, ConvBN, LinearBN,
                                           conv1x1_to_linear, folded, fuse_bn_linear,
                                           fuse_conv_bn, fuse_linear_bn, scaled_output)
from mmeff.models.layers.graph_mode import (graph_forms, is_compiling_for_cpu, is_graph_export,
                                            use_graph_forms)
from mmeff.models.layers.memory_format import (contiguous_nchw, is_channels_last_map,
                                               nhwc_rows, to_memory_format)
from mmeff.models.layers.pointwise import PointwiseConv2d
from mmeff.models.layers.scale_and_drop import (DropPath, LayerScale, drop_path_or_identity,
                                                drop_path_rates, is_drop_path)
from mmeff.models.layers.tensor_cache import (DEFAULT_BUDGET_MB, TensorCache, cache_budget_bytes,
                                              cached_bytes, caching_allowed, clear_all_caches,
                                              set_cache_budget)

__all__ = [
    'GELU2d', 'PointwiseConv2d', 'AttentionBias2d', 'relative_offset_index',
    'resize_offset_table', 'BNLinear',
    'ChannelAffine', 'ConvBN', 'LinearBN', 'conv1x1_to_linear', 'folded', 'fuse_bn_linear',
    'fuse_conv_bn', 'fuse_linear_bn', 'scaled_output', 'graph_forms', 'is_compiling_for_cpu',
    'is_graph_export', 'use_graph_forms', 'contiguous_nchw', 'is_channels_last_map',
    'nhwc_rows', 'to_memory_format',
    'DropPath', 'LayerScale',
    'drop_path_or_identity', 'drop_path_rates', 'is_drop_path', 'DEFAULT_BUDGET_MB', 'TensorCache',
    'cache_budget_bytes', 'cached_bytes', 'caching_allowed', 'clear_all_caches', 'set_cache_budget'
]
