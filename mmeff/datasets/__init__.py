"""Datasets: ImageNet class folders for pretraining, and toy-data generators in the real
COCO / ADE20K / ImageNet formats."""
from mmeff.datasets.imagenet import ImageNet
from mmeff.datasets.toy_data import (ADE_CLASSES, ADE_LABELS, COCO_CLASSES, IMAGENET_CLASSES, TOY_SUBDIRS,
                       make_ade, make_coco, make_imagenet, make_toy_data)

__all__ = ['ImageNet', 'ADE_CLASSES', 'ADE_LABELS', 'COCO_CLASSES', 'IMAGENET_CLASSES',
           'TOY_SUBDIRS', 'make_ade', 'make_coco', 'make_imagenet', 'make_toy_data']
