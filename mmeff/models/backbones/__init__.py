"""Backbones: the shared contract (:class:`MobileBackbone`) and one package per family
(variant table, blocks, backbone, checkpoint layouts), each registered in mmeff's MODELS."""
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.backbones.efficientformer import EfficientFormer
from mmeff.models.backbones.efficientformer_v2 import EfficientFormerV2
from mmeff.models.backbones.efficientvit import EfficientViT

__all__ = ['MobileBackbone', 'EfficientFormer', 'EfficientFormerV2', 'EfficientViT']
