"""Classification models (pretraining and reference comparisons)."""
from .classifier_net import MobileClassifierNet
from .efficientformer import efficientformer_classifier
from .efficientvit import efficientvit_classifier
from ..heads.efficientformer_v2_head import efficientformer_v2_classifier

__all__ = ['MobileClassifierNet', 'efficientformer_classifier', 'efficientvit_classifier',
           'efficientformer_v2_classifier']
