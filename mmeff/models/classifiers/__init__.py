"""Classification models (pretraining and reference comparisons)."""
from .classifier_net import MobileClassifierNet
from .data_preprocessor import ClsDataPreprocessor
from .efficientformer import efficientformer_classifier
from .efficientvit import efficientvit_classifier
from .image_classifier import ImageClassifier
from .teacher import FrozenTeacher
from ..heads.efficientformer_v2_head import efficientformer_v2_classifier  # noqa: E402

__all__ = [
    'MobileClassifierNet', 'ClsDataPreprocessor', 'ImageClassifier', 'FrozenTeacher',
    'efficientformer_classifier', 'efficientvit_classifier', 'efficientformer_v2_classifier'
]
