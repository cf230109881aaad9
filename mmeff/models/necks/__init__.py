"""Necks that adapt a family's outputs to MMDet/MMSeg heads."""
from .efficientvit_fpn import EfficientViTFPN

__all__ = ['EfficientViTFPN']
