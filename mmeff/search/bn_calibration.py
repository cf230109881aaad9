"""BatchNorm recalibration of a subnet before it is scored (slimmable networks, once-for-all).

A slimmable supernet keeps one BatchNorm per width configuration, shared by every subnet of that
width whatever its depths and expansion ratios: the running statistics it learnt during the
sandwich training are an average over many subnets and are wrong for most of them. Before a
subnet is scored, its statistics are re-estimated on a few training batches: the BatchNorms the
subnet runs are reset and accumulate the exact (cumulative, ``momentum=None``) average of the
batch statistics, with no gradient and every other module in eval mode (no drop path).
"""
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List

import torch
from mmengine.model import BaseModel
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> List[_BatchNorm]:
    """Re-estimate the running mean / var of the BatchNorms ``model`` runs on ``batches``
    (preprocessed input tensors; an mmengine model runs them with ``mode='tensor'``); returns
    those BatchNorms. ``model`` is left in eval mode.

    Only the BatchNorms the forward reaches are reset (on their first call), so the unused
    per-width norms of a supernet keep their statistics. Their running mean / var become the
    mean over the batches of each batch's mean / unbiased variance.
    """
    active: List[_BatchNorm] = []
    momenta: Dict[_BatchNorm, object] = {}

    def reset_on_first_call(bn: _BatchNorm, _inputs) -> None:
        if bn not in momenta:
            momenta[bn] = bn.momentum
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average of the batches
            bn.train()
            active.append(bn)

    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    hooks = [bn.register_forward_pre_hook(reset_on_first_call) for bn in norms]
    model.eval()
    count = 0
    try:
        with torch.no_grad():
            for x in batches:
                model(x, mode='tensor') if isinstance(model, BaseModel) else model(x)
                count += 1
    finally:
        for h in hooks:
            h.remove()
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        model.eval()
    if count == 0:
        raise ValueError('recalibrate_bn got no batch: give at least one training batch')
    return active


@contextmanager
def bn_recalibrated(model: nn.Module, batches: Iterable[torch.Tensor]) -> Iterator[None]:
    """Run the body with the BatchNorm statistics of ``model``'s active subnet recalibrated on
    ``batches``, then restore every BatchNorm buffer: scoring one subnet must not change the
    statistics another subnet is scored with (slimming compares many)."""
    saved = {name: buf.clone() for name, buf in model.named_buffers()
             if _is_bn_buffer(model, name)}
    try:
        recalibrate_bn(model, batches)
        yield
    finally:
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, value in saved.items():
                buffers[name].copy_(value)


def _is_bn_buffer(model: nn.Module, name: str) -> bool:
    owner = model.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else model
    return isinstance(owner, _BatchNorm)
