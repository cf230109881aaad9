"""EfficientFormer classification head (norm + token mean + class and distillation heads)."""
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from mmeff.registry import MODELS


@MODELS.register_module()
class EfficientFormerClsHead(nn.Module):
    """LayerNorm over channels, mean over tokens, then a class head and a DeiT-style
    distillation head.

    Takes the last stage's (B, C, H, W) map (or (B, N, C) tokens). Returns ``(cls, dist)`` in
    training mode with ``distillation=True`` (the distillation loss needs both) and their
    average otherwise, as the official model and timm do.
    """

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes}')
        self.distillation = distillation
        self.norm = nn.LayerNorm(in_channels)
        self.head = nn.Linear(in_channels, num_classes)
        self.head_dist = nn.Linear(in_channels, num_classes) if distillation else None
        for linear in (self.head, self.head_dist):
            if linear is not None:
                trunc_normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)

    @staticmethod
    def tokens(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2) if x.dim() == 4 else x

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tokens(x)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        x = self.pre_logits(x)
        if self.head_dist is None:
            return self.head(x)
        cls, dist = self.head(x), self.head_dist(x)
        if self.training:
            return cls, dist
        return (cls + dist) / 2

    def fuse(self) -> 'EfficientFormerClsHeadDeploy':
        """Inference form: affine-free LayerNorm, one Linear holding the LN affine and the
        average of both heads (exact: mean and the heads are linear)."""
        weight, bias = self.head.weight, self.head.bias
        if self.head_dist is not None:
            weight = (weight + self.head_dist.weight) / 2
            bias = (bias + self.head_dist.bias) / 2
        linear = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device, weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight * self.norm.weight[None, :])
            linear.bias.copy_(bias + weight @ self.norm.bias)
        return EfficientFormerClsHeadDeploy(self.norm.normalized_shape, self.norm.eps, linear)


class EfficientFormerClsHeadDeploy(nn.Module):
    """Deploy form of :class:`EfficientFormerClsHead` (eval-mode output)."""

    def __init__(self, normalized_shape, eps: float, linear: nn.Linear):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = EfficientFormerClsHead.tokens(x)
        return self.linear(F.layer_norm(x, self.normalized_shape, eps=self.eps).mean(dim=1))
