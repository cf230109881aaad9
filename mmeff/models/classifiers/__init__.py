"""Classification models (pretraining and reference comparisons)."""
from .classifier_net import MobileClassifierNet
from .data_preprocessor import ClsDataPreprocessor
from .image_classifier import ImageClassifier
from .teacher import FrozenTeacher

__all__ = ['MobileClassifierNet', 'ClsDataPreprocessor', 'ImageClassifier', 'FrozenTeacher']
