"""EfficientFormerV2 (S0/S1/S2/L): variant table, blocks, backbone and checkpoint layouts."""
from mmeff.models.backbones.efficientformer_v2.arch import ARCH_SETTINGS
from mmeff.models.backbones.efficientformer_v2.backbone import EfficientFormerV2
from mmeff.models.backbones.efficientformer_v2.checkpoint import EfficientFormerV2Converter

__all__ = ['ARCH_SETTINGS', 'EfficientFormerV2', 'EfficientFormerV2Converter']
