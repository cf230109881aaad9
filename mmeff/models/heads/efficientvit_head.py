"""EfficientViT classification head: global average pool, BN1d + Linear, optional DeiT-style
distillation head (microsoft/Cream ``BN_Linear`` heads ``head`` / ``head_dist``)."""
from typing import Tuple, Union

import torch
from torch import nn

from mmeff.registry import MODELS
from mmeff.models.layers import BNLinear, folded


@MODELS.register_module()
class EfficientViTClsHead(nn.Module):
    """Pool the last (B, C, H, W) map, then ``BNLinear`` (and a distillation ``BNLinear``).

    Returns ``(cls, dist)`` in training mode with ``distillation=True`` (the distillation loss
    needs both) and their average otherwise, as the official model does. The released
    ImageNet models have no distillation head (their parameter counts say so).
    """

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = False):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes}')
        self.distillation = distillation
        self.head = BNLinear(in_channels, num_classes)
        self.head_dist = BNLinear(in_channels, num_classes) if distillation else None

    @staticmethod
    def pre_logits(x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) if x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        x = self.pre_logits(x)
        if self.head_dist is None:
            return self.head(x)
        cls, dist = self.head(x), self.head_dist(x)
        if self.training:
            return cls, dist
        return (cls + dist) / 2

    @torch.no_grad()
    def fuse(self) -> 'EfficientViTClsHeadDeploy':
        """Inference form: both BNs folded and the two heads averaged into one Linear (exact:
        everything after the pooling is affine)."""
        linear = folded(self.head)
        if self.head_dist is not None:
            dist = folded(self.head_dist)
            linear.weight.copy_((linear.weight + dist.weight) / 2)
            linear.bias.copy_((linear.bias + dist.bias) / 2)
        return EfficientViTClsHeadDeploy(linear)


class EfficientViTClsHeadDeploy(nn.Module):
    """Deploy form of :class:`EfficientViTClsHead` (its eval-mode output)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(EfficientViTClsHead.pre_logits(x))
