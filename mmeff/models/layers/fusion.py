"""Deploy-time model surgery: fold BatchNorms, drop training-only ops, freeze attention biases.

``fuse(model)`` works on any mmeff model (backbone, classifier, or an MMDet/MMSeg model that
contains one): every submodule that defines ``fuse()`` is replaced by what it returns (a
ConvBN becomes one Conv2d, a family block folds its own BN pairs), stochastic depth and dropout
become identities, and with ``input_shape`` every attention bias is precomputed as a constant
for that resolution (what export needs: no bicubic resize or gather left in the graph).
"""
import inspect
from typing import Optional, Sequence

import torch
from torch import nn

from mmeff.models.layers.attention_bias import AttentionBias2d
from mmeff.models.layers.scale_and_drop import is_drop_path

_TRAINING_ONLY = (nn.Dropout, nn.Dropout2d, nn.Dropout1d)


def _takes_no_arguments(fn) -> bool:
    """Only a zero-argument ``fuse()`` is ours; other libraries use the name differently
    (MMDet's FPG neck has ``fuse(self, fuse_dict)``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params)


def _fuse_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        _fuse_children(child)
        fuse_fn = getattr(child, 'fuse', None)
        if callable(fuse_fn) and not isinstance(child, AttentionBias2d) and \
                _takes_no_arguments(fuse_fn):
            setattr(module, name, fuse_fn())
        elif isinstance(child, _TRAINING_ONLY) or is_drop_path(child):
            setattr(module, name, nn.Identity())


@torch.no_grad()
def freeze_attention_biases(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Run one forward at ``input_shape`` (N, C, H, W) and freeze every bias at the grid it saw."""
    calls = {}

    def record(module, args, kwargs):
        if module not in calls:
            calls[module] = (args, kwargs)

    biases = [m for m in model.modules() if isinstance(m, AttentionBias2d)]
    handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in biases]
    param = next(model.parameters())
    try:
        model(torch.zeros(*input_shape, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
    for module, (args, kwargs) in calls.items():
        module.freeze(*args, **kwargs)
    return len(calls)


def fuse(model: nn.Module, input_shape: Optional[Sequence[int]] = None) -> nn.Module:
    """Fold every BN into its conv/linear neighbour and remove training-only ops, in place.

    Args:
        model: any module containing mmeff blocks; switched to eval mode.
        input_shape: optional (N, C, H, W); when given, attention biases are frozen as
            constants for that resolution (export). Without it they stay cached per resolution.
    Returns:
        The same model object, fused (so it can be used in a chain).
    """
    model.eval()
    _fuse_children(model)
    if input_shape is not None:
        freeze_attention_biases(model, input_shape)
    return model
