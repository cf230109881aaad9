"""Datasets: ImageNet class folders for pretraining (toy-data generators live here too)."""
from .imagenet import ImageNet

__all__ = ['ImageNet']
