"""In-memory toy classification data for the search demo and tests.

Each class is a sinusoidal grating of its own orientation (random phase, frequency, colour
and noise), so small networks learn it in seconds on a CPU yet not perfectly. The repository's
ImageNet-folder generator (``mmeff/datasets/toy_data.py`` on the foundation branch) had not
landed when this was written; this keeps the search pipeline self-contained.
"""
import math
from typing import Tuple

import torch


def make_toy_classification(num_classes: int = 8, per_class: int = 100, img_size: int = 64,
                            noise: float = 0.8, seed: int = 0
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, S, S) float, labels (N,) long), classes balanced and shuffled."""
    if num_classes < 2 or per_class < 1 or img_size < 32:
        raise ValueError('toy data needs num_classes >= 2, per_class >= 1, img_size >= 32; got '
                         f'{num_classes}, {per_class}, {img_size}')
    gen = torch.Generator().manual_seed(seed)
    n = num_classes * per_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    theta = labels.float() * math.pi / num_classes
    theta = theta + (torch.rand(n, generator=gen) - 0.5) * (math.pi / num_classes) * 0.6
    freq = 2 * math.pi * (2 + 4 * torch.rand(n, generator=gen)) / img_size
    phase = 2 * math.pi * torch.rand(n, generator=gen)
    coords = torch.arange(img_size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing='ij')
    proj = (xx[None] * theta.cos()[:, None, None] + yy[None] * theta.sin()[:, None, None])
    wave = torch.sin(proj * freq[:, None, None] + phase[:, None, None])
    colour = torch.rand(n, 3, 1, 1, generator=gen) + 0.2
    images = wave[:, None] * colour + noise * torch.randn(n, 3, img_size, img_size,
                                                          generator=gen)
    order = torch.randperm(n, generator=gen)
    return images[order], labels[order]
