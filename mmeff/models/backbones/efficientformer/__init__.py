"""EfficientFormer (V1, L1/L3/L7): variant table, blocks, backbone and checkpoint layouts."""
from mmeff.models.backbones.efficientformer.arch import ARCH_SETTINGS
from mmeff.models.backbones.efficientformer.backbone import EfficientFormer
from mmeff.models.backbones.efficientformer.checkpoint import EfficientFormerConverter

__all__ = ['ARCH_SETTINGS', 'EfficientFormer', 'EfficientFormerConverter']
