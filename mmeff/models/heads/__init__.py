"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from .efficientformer_head import EfficientFormerClsHead
from .efficientvit_head import EfficientViTClsHead

__all__ = ['EfficientFormerClsHead', 'EfficientViTClsHead']
