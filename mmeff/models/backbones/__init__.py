"""Backbones: one module per family, each registered in mmeff's MODELS."""
from .base import MobileBackbone

__all__ = ['MobileBackbone']
