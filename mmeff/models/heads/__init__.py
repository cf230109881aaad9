"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from .efficientformer_head import EfficientFormerClsHead
from .efficientformer_v2_head import EfficientFormerV2ClsHead, efficientformer_v2_classifier

__all__ = ['EfficientFormerClsHead', 'EfficientFormerV2ClsHead', 'efficientformer_v2_classifier']
