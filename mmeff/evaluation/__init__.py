"""Evaluation metrics registered in mmeff's METRICS."""
from .accuracy import Accuracy

__all__ = ['Accuracy']
