"""A plain ``nn.Module`` classifier: backbone + family head, in mmeff's canonical key layout.

Its state dict (``backbone.*`` + ``head.*``) is the canonical layout that every checkpoint
converter produces and that the dense backbones load from (``backbone.`` selected, head
dropped). The mmengine training model of the pretraining module wraps the same two parts, so
its checkpoints have the same keys.
"""
from typing import Tuple, Union

import torch
from torch import nn

from mmeff.registry import MODELS, build_model


@MODELS.register_module()
class MobileClassifierNet(nn.Module):
    """Backbone (last stage only, no dense output norms) followed by a classification head.

    The head returns ``(cls_logits, dist_logits)`` in training mode when it has a distillation
    head, and the average of both in eval mode (DeiT's convention), else plain logits.
    """

    def __init__(self, backbone: Union[nn.Module, dict], head: Union[nn.Module, dict]):
        super().__init__()
        self.backbone = build_model(backbone) if isinstance(backbone, dict) else backbone
        self.head = build_model(head) if isinstance(head, dict) else head

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return self.head(self.backbone(x)[-1])
