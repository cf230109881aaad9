"""Classification models (pretraining and reference comparisons)."""
from mmeff.models.classifiers.classifier_net import MobileClassifierNet
from mmeff.models.classifiers.data_preprocessor import ClsDataPreprocessor
from mmeff.models.classifiers.efficientformer import efficientformer_classifier
from mmeff.models.classifiers.efficientformer_v2 import efficientformer_v2_classifier
from mmeff.models.classifiers.efficientvit import efficientvit_classifier
from mmeff.models.classifiers.image_classifier import ImageClassifier
from mmeff.models.classifiers.teacher import FrozenTeacher

__all__ = [
    'MobileClassifierNet', 'ClsDataPreprocessor', 'ImageClassifier', 'FrozenTeacher',
    'efficientformer_classifier', 'efficientvit_classifier', 'efficientformer_v2_classifier'
]
