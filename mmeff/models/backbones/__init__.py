"""Backbones: one module per family, each registered in mmeff's MODELS."""
from .base import MobileBackbone
from .efficientformer import EfficientFormer
from .efficientvit import EfficientViT

__all__ = ['MobileBackbone', 'EfficientFormer', 'EfficientViT']
