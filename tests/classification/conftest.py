"""Shared pieces of the classification tests: small stand-in networks and a timm teacher file."""
from typing import Tuple

import pytest
import timm
import torch
from torch import nn


class StandInBackbone(nn.Module):
    """Two conv-BN stages returning a tuple of maps, like an mmeff backbone."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width))
        self.ls = nn.Parameter(torch.ones(2 * width))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (self.stage(self.stem(x)) * self.ls[:, None, None],)


class StandInHead(nn.Module):
    """The family-head interface: (cls, dist) in training with distillation, mean in eval."""

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__()
        self.num_classes, self.distillation = num_classes, distillation
        self.head = nn.Linear(in_channels, num_classes)
        self.head_dist = nn.Linear(in_channels, num_classes) if distillation else None

    def forward(self, x: torch.Tensor):
        x = x.mean((2, 3))
        if self.head_dist is None:
            return self.head(x)
        cls, dist = self.head(x), self.head_dist(x)
        return (cls, dist) if self.training else (cls + dist) / 2


@pytest.fixture
def stand_ins():
    def make(num_classes: int = 4, distillation: bool = False):
        return StandInBackbone(), StandInHead(16, num_classes, distillation)
    return make


@pytest.fixture(scope='session')
def teacher_file(tmp_path_factory) -> str:
    """A randomly initialised timm 'test_resnet' with 4 classes, saved as DeiT saves teachers."""
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', pretrained=False, num_classes=4)
    path = tmp_path_factory.mktemp('teacher') / 'test_resnet.pth'
    torch.save({'model': model.state_dict()}, path)
    return str(path)
