"""Backbones: one module per family, each registered in mmeff's MODELS."""
from .base import MobileBackbone
from .efficientvit import EfficientViT

__all__ = ['MobileBackbone', 'EfficientViT']
