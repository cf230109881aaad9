"""EfficientFormerV2 classification head and the classifier builder used for pretraining and
for the reference comparisons with timm / the official release."""
from typing import Tuple, Union

import torch
from torch import nn

from mmeff.registry import MODELS
from mmeff.models.layers.conv_norm import ChannelAffine, _bn_scale_shift

Logits = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


@MODELS.register_module()
class EfficientFormerV2ClsHead(nn.Module):
    """BatchNorm -> global average pool -> ``head`` (+ ``head_dist``) linear classifiers.

    With distillation the head returns ``(cls, dist)`` logits in training mode (DeiT-style hard
    distillation trains both) and their average in eval mode, like the official model.

    Args:
        in_channels: width of the last stage.
        num_classes: classes; 0 returns the pooled features.
        distillation: whether there is a distillation head.
    """

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.num_classes = num_classes
        self.head = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(in_channels, num_classes) if num_classes > 0
                          else nn.Identity()) if distillation else None
        for m in (self.head, self.head_dist):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Logits:
        x = self.norm(x).mean(dim=(2, 3))
        if self.head_dist is None:
            return self.head(x)
        cls, dist = self.head(x), self.head_dist(x)
        return (cls, dist) if self.training else (cls + dist) / 2

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Eval-mode equivalent: pool -> one Linear (BN folded, the two heads averaged)."""
        heads = [h for h in (self.head, self.head_dist) if h is not None]
        if not isinstance(self.head, nn.Linear):
            return nn.Sequential(_GlobalAvgPool(), ChannelAffine(self.norm))
        weight = sum(h.weight for h in heads) / len(heads)
        bias = sum(h.bias for h in heads) / len(heads)
        scale, shift = _bn_scale_shift(self.norm)
        linear = nn.Linear(weight.shape[1], weight.shape[0]).to(weight)
        linear.weight.copy_(weight * scale[None, :])
        linear.bias.copy_(bias + weight @ shift)
        return nn.Sequential(_GlobalAvgPool(), linear)


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
