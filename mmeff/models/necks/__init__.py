"""Necks that adapt a family's outputs to MMDet/MMSeg heads."""
from mmeff.models.necks.efficientvit_fpn import EfficientViTFPN

__all__ = ['EfficientViTFPN']
