"""The benchmark's ``train`` backend: one training step (forward, backward, gradients cleared)
of a model in train mode, the cost that decides how long dense fine-tuning takes.

Detection and segmentation train the backbone at 512x512 and more, where the CPU time of the
forward *and* backward passes, not the inference latency, is what a user waits for. The step is
what an optimiser step needs before it updates the weights:

* the model in ``train()`` mode (BatchNorm batch statistics, drop path if configured);
* ``loss = sum over outputs of mean(out ** 2)``: every returned map (every stage of a dense
  backbone) gets a gradient, and the loss's own cost is negligible next to the network;
* ``loss.backward()`` into every parameter, then the gradients are cleared
  (``zero_grad(set_to_none=True)``, what mmengine's optimizer wrapper does), so the next step
  starts alike and no gradient memory accumulates between timed calls.

The default size of a benchmark run with only this backend is :data:`TRAIN_DEFAULT_BATCH` images
of :data:`TRAIN_DEFAULT_HW` (tools/benchmark.py). The optimiser update itself is left out: it is
the same element-wise pass over the weights for any implementation of a model.
"""
from typing import Callable, Sequence, Tuple, Union

import torch
from torch import nn

#: what ``tools/benchmark.py --backends train`` times unless told otherwise
TRAIN_DEFAULT_BATCH = 2
TRAIN_DEFAULT_HW: Tuple[int, int] = (512, 512)

Outputs = Union[torch.Tensor, Sequence[torch.Tensor], dict]


def _tensors(outputs: Outputs) -> Tuple[torch.Tensor, ...]:
    """Every floating-point tensor of a model's output (tensor, list/tuple or dict)."""
    if isinstance(outputs, torch.Tensor):
        items = [outputs]
    elif isinstance(outputs, dict):
        items = list(outputs.values())
    else:
        items = list(outputs)
    found = tuple(t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point())
    if not found:
        raise ValueError(f'the train step needs a model returning floating-point tensors; got '
                         f'{type(outputs).__name__}')
    return found


def step_loss(outputs: Outputs) -> torch.Tensor:
    """The benchmark's training loss: the sum over outputs of their mean square."""
    return sum(out.float().pow(2).mean() for out in _tensors(outputs))


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A zero-argument call running one training step of ``model`` on ``x`` (see the module
    docstring); it returns the loss, detached. ``model`` is switched to train mode."""
    model.train()
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError('the train step needs a model with trainable parameters (all have '
                         'requires_grad=False, e.g. frozen_stages covers every stage)')

    def step() -> torch.Tensor:
        loss = step_loss(model(x))
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.detach()
    return step


__all__ = ['TRAIN_DEFAULT_BATCH', 'TRAIN_DEFAULT_HW', 'step_loss', 'train_step']
