"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from .efficientvit_head import EfficientViTClsHead

__all__ = ['EfficientViTClsHead']
