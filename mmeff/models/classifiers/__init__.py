"""Classification models (pretraining and reference comparisons)."""
from .classifier_net import MobileClassifierNet
from .efficientvit import efficientvit_classifier

__all__ = ['MobileClassifierNet', 'efficientvit_classifier']
