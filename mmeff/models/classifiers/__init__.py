"""Classification models (pretraining and reference comparisons)."""
from .classifier_net import MobileClassifierNet

__all__ = ['MobileClassifierNet']
