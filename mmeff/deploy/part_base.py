"""The base of every export part (:mod:`mmeff.deploy.parts`, :mod:`mmeff.deploy.detectors`):
a module whose ``forward(image)`` returns a flat tuple of tensors with names."""
from typing import List, Tuple

import torch
from torch import nn

Outputs = Tuple[torch.Tensor, ...]


class ExportPart(nn.Module):
    """Base: ``forward(image)`` returns a flat tuple; ``output_names`` names its entries."""
    part: str = ''

    def output_names(self, num_outputs: int) -> List[str]:
        return [f'output{i}' for i in range(num_outputs)]
