"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from .efficientformer_v2_head import EfficientFormerV2ClsHead, efficientformer_v2_classifier  # noqa: F401
