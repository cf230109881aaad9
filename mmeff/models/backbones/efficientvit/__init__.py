"""EfficientViT (M0-M5): variant table, blocks, backbone and checkpoint layouts."""
from mmeff.models.backbones.efficientvit.arch import EFFICIENTVIT_ARCHS
from mmeff.models.backbones.efficientvit.backbone import EfficientViT
from mmeff.models.backbones.efficientvit.checkpoint import EfficientViTConverter

__all__ = ['EFFICIENTVIT_ARCHS', 'EfficientViT', 'EfficientViTConverter']
