"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from .efficientformer_head import EfficientFormerClsHead
from .efficientformer_v2_head import EfficientFormerV2ClsHead, efficientformer_v2_classifier
from .efficientvit_head import EfficientViTClsHead

__all__ = ['EfficientFormerClsHead', 'EfficientFormerV2ClsHead', 'EfficientViTClsHead',
           'efficientformer_v2_classifier']
