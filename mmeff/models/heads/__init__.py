"""Classification heads, one per family (norm + pooling + head + distillation head)."""
from mmeff.models.heads.efficientformer_head import EfficientFormerClsHead
from mmeff.models.heads.efficientformer_v2_head import EfficientFormerV2ClsHead
from mmeff.models.heads.efficientvit_head import EfficientViTClsHead

__all__ = ['EfficientFormerClsHead', 'EfficientFormerV2ClsHead', 'EfficientViTClsHead']
