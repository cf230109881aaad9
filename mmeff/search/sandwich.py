"""Sandwich-rule training of the slimmable EfficientFormerV2 supernet (Yu & Huang, "Universally
slimmable networks"; the V2 paper, Alg. 1: max, min, rand-1, rand-2 at every iteration).

:class:`SandwichClassifier` is the pretraining classifier (:class:`mmeff.ImageClassifier`: data
preprocessor, mixup / cutmix, DeiT distillation from a frozen teacher) with its own
``train_step``: one batch runs through the largest, the smallest and ``num_random`` random
subnets; their gradients accumulate in the shared weights (and each subnet's own BatchNorms);
then the optimizer steps once. With ``inplace_distillation`` the smaller subnets learn from the
largest subnet's soft predictions (detached) instead of the labels. The teacher, if any, runs
once per batch. After the step the max subnet is active again, so validation reports the
largest subnet.
"""
import random
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.optim import OptimWrapper

from mmeff.models.classifiers.image_classifier import ImageClassifier, Samples
from mmeff.registry import MODELS
from mmeff.search.v2_supernet import EfficientFormerV2Supernet, EfficientFormerV2SupernetHead


@MODELS.register_module()
class SandwichClassifier(ImageClassifier):
    """Trains an :class:`EfficientFormerV2Supernet` by the sandwich rule.

    Args:
        backbone: ``dict(type='mmeff.EfficientFormerV2Supernet', ...)`` with
            ``out_indices=(3,)`` and ``with_out_norms=False`` (a classification backbone).
        head: ``dict(type='mmeff.EfficientFormerV2SupernetHead', width_choices=<last stage's>)``.
        num_random: random subnets per iteration besides max and min (the paper: 2).
        inplace_distillation: the min and random subnets learn the max subnet's soft labels.
        seed: seed of the subnet sampler.
        **kwargs: :class:`ImageClassifier` arguments (teacher, distillation_alpha, ...).

    Multi-process (DDP) training is not supported: mmengine's DDP wrapper runs its own train
    step, which would train one subnet; ``loss`` refuses to run in training mode outside the
    sandwich step for that reason.
    """

    def __init__(self, *args, num_random: int = 2, inplace_distillation: bool = False,
                 seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.backbone, EfficientFormerV2Supernet):
            raise ValueError('SandwichClassifier trains a supernet: backbone type must be '
                             f"'mmeff.EfficientFormerV2Supernet', got {type(self.backbone).__name__}")
        if not isinstance(self.head, EfficientFormerV2SupernetHead):
            raise ValueError("SandwichClassifier needs head type='mmeff.EfficientFormerV2SupernetHead'"
                             " (it takes every last-stage width), got "
                             f'{type(self.head).__name__}')
        if not isinstance(num_random, int) or num_random < 0:
            raise ValueError(f'num_random must be an int >= 0, got {num_random!r}')
        self.num_random = num_random
        self.inplace_distillation = bool(inplace_distillation)
        self.rng = random.Random(seed)
        self._in_sandwich = False

    def sandwich(self) -> List[Tuple[str, dict]]:
        """This iteration's subnets: ('max', arch), ('min', arch), ('rand1', arch), ..."""
        supernet = self.backbone
        archs = [('max', supernet.max_arch), ('min', supernet.min_arch)]
        return archs + [(f'rand{k + 1}', supernet.sample_subnet(self.rng))
                        for k in range(self.num_random)]

    def loss(self, inputs: torch.Tensor, data_samples: Samples) -> Dict[str, torch.Tensor]:
        if self.training and not self._in_sandwich:
            raise RuntimeError(
                'SandwichClassifier trains in its train_step (max, min and random subnets per '
                'step); loss() alone would train one subnet. Train with one process (the DDP '
                'wrapper calls loss() directly), or use mmeff.ImageClassifier to train the '
                'active subnet only')
        return super().loss(inputs, data_samples)

    def train_step(self, data: dict, optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """Sandwich rule: accumulate the gradients of every subnet of :meth:`sandwich`, then
        one optimizer step. Returns the loss of each subnet (``max.loss_cls``, ...) and their
        sum (``loss``)."""
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
        inputs, samples = data['inputs'], data['data_samples']
        self.check_labels(samples)
        with torch.no_grad():
            teacher_label = self.teacher_label(inputs) if self.with_teacher else None
        soft: Optional[torch.Tensor] = None
        log_vars: Dict[str, torch.Tensor] = {}
        total = 0.0
        self._in_sandwich = True
        try:
            for name, arch in self.sandwich():
                self.backbone.set_subnet(arch)
                targets = samples if soft is None else dict(samples, gt_score=soft)
                with optim_wrapper.optim_context(self):
                    outputs = self.head(self.extract_feat(inputs))
                    loss, sub_log = self.parse_losses(self.losses(outputs, targets, teacher_label))
                optim_wrapper.backward(loss)
                if self.inplace_distillation and soft is None:
                    soft = _prediction(outputs).detach().float().softmax(dim=1)
                log_vars.update((f'{name}.{k}', v.detach()) for k, v in sub_log.items()
                                if k != 'loss')
                total = total + sub_log['loss'].detach()
            optim_wrapper.step()
            optim_wrapper.zero_grad()
        finally:
            self._in_sandwich = False
            self.backbone.set_max()
        log_vars['loss'] = total
        return log_vars


def _prediction(outputs) -> torch.Tensor:
    """What the network predicts: the class logits, averaged with the distillation head's."""
    if isinstance(outputs, (tuple, list)):
        return (outputs[0] + outputs[1]) / 2
    return outputs
