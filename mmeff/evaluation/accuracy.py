"""Top-k classification accuracy for mmengine's evaluator (``type='mmeff.Accuracy'``)."""
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric

from mmeff.registry import METRICS


def _field(sample: Any, name: str) -> Any:
    return sample.get(name) if isinstance(sample, dict) else getattr(sample, name, None)


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Percentage of images whose label is among the ``k`` highest scores, for each ``k``.

    Reads ``pred_score`` (C,) and ``gt_label`` from each prediction (what
    :meth:`mmeff.models.ImageClassifier.predict` returns). Only one boolean per ``k`` is kept per
    image, so 50k ImageNet images cost nothing to collect across ranks.

    Args:
        topk: the ``k`` values; results are named ``accuracy/top{k}``.
    """

    default_prefix = 'accuracy'

    def __init__(self, topk: Union[int, Sequence[int]] = (1, 5), collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(not isinstance(k, int) or k < 1 for k in self.topk):
            raise ValueError(f'topk must be positive integers, got {topk!r}')

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        for sample in data_samples:
            score, label = _field(sample, 'pred_score'), _field(sample, 'gt_label')
            if score is None or label is None:
                fields = list(sample) if isinstance(sample, dict) else sample
                raise ValueError('Accuracy needs pred_score and gt_label in every prediction; '
                                 f'got {fields}')
            score = torch.as_tensor(score).flatten()
            num_classes = score.numel()
            if max(self.topk) > num_classes:
                raise ValueError(
                    f'top-{max(self.topk)} accuracy is meaningless with {num_classes} classes '
                    f'(always 100%): set the metric topk to values <= {num_classes}, '
                    'e.g. topk=(1,)')
            label = int(torch.as_tensor(label).flatten()[0])
            # rank of the true class = number of classes scored strictly higher
            rank = int((score > score[label]).sum())
            self.results.append([rank < k for k in self.topk])

    def compute_metrics(self, results: List[List[bool]]) -> Dict[str, float]:
        if not results:
            raise ValueError('no predictions were collected: is the validation set empty?')
        hits = torch.tensor(results, dtype=torch.float64)
        return {f'top{k}': float(hits[:, i].mean() * 100) for i, k in enumerate(self.topk)}
