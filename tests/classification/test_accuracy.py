"""The top-k Accuracy metric."""
import pytest
import torch
from mmengine.structures import BaseDataElement

from mmeff.evaluation import Accuracy
from mmeff.registry import METRICS


def _sample(scores, label):
    return {'pred_score': torch.tensor(scores), 'gt_label': torch.tensor(label)}


def test_top1_top2_counts():
    metric = Accuracy(topk=(1, 2))
    metric.process(None, [_sample([0.1, 0.7, 0.2], 1),    # top-1 hit
                          _sample([0.5, 0.1, 0.4], 2),    # top-2 hit only
                          _sample([0.6, 0.3, 0.1], 2)])   # miss
    metric.process(None, [BaseDataElement(pred_score=torch.tensor([0.2, 0.3, 0.5]),
                                          gt_label=torch.tensor(2)).to_dict()])
    result = metric.compute_metrics(metric.results)
    assert result == {'top1': 50.0, 'top2': 75.0}


def test_registered_with_accuracy_prefix():
    metric = METRICS.build(dict(type='mmeff.Accuracy', topk=1))
    metric.process(None, [_sample([0.1, 0.9], 1)])
    assert metric.evaluate(1) == {'accuracy/top1': 100.0}


def test_topk_above_class_count_is_a_clear_error():
    metric = Accuracy(topk=(1, 5))
    with pytest.raises(ValueError, match=r'top-5 .* 4 classes.*topk=\(1,\)'):
        metric.process(None, [_sample([0.1, 0.2, 0.3, 0.4], 0)])
    with pytest.raises(ValueError, match='positive integers'):
        Accuracy(topk=(0,))


def test_prediction_without_score_or_label_and_empty_results_are_clear_errors():
    metric = Accuracy(topk=1)
    with pytest.raises(ValueError, match=r"needs pred_score and gt_label .*got \['pred_score'\]"):
        metric.process(None, [{'pred_score': torch.tensor([0.1, 0.9])}])
    with pytest.raises(ValueError, match='no predictions were collected: is the validation '
                                         'set empty'):
        metric.compute_metrics([])
