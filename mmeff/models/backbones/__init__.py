"""Backbones: one module per family, each registered in mmeff's MODELS."""
from .base import MobileBackbone
from .efficientformer import EfficientFormer
from .efficientformer_v2 import EfficientFormerV2
from .efficientvit import EfficientViT

__all__ = ['MobileBackbone', 'EfficientFormer', 'EfficientFormerV2', 'EfficientViT']
