"""Evaluation metrics registered in mmeff's METRICS."""
from mmeff.evaluation.accuracy import Accuracy

__all__ = ['Accuracy']
