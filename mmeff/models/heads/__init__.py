"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from .efficientformer_head import EfficientFormerClsHead

__all__ = ['EfficientFormerClsHead']
