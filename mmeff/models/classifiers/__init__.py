"""Classification models (pretraining and reference comparisons)."""
from .classifier_net import MobileClassifierNet
from .efficientformer import efficientformer_classifier

__all__ = ['MobileClassifierNet', 'efficientformer_classifier']
