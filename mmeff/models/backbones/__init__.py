"""Backbones: one module per family, each registered in mmeff's MODELS."""
from .base import MobileBackbone
from .efficientformer_v2 import EfficientFormerV2

__all__ = ['MobileBackbone', 'EfficientFormerV2']
