"""EfficientFormer supernet (paper §4.2, Eqn. 7-8): every block is a MetaPath.

A :class:`MetaPath` holds the candidate blocks of one position — {MB4D, identity} in stages
1-2, {MB4D, MB3D, identity} in stages 3-4 — and one architecture logit per candidate. In
training its output is the Gumbel-softmax-weighted sum of the candidates (Eqn. 8), so both
the block weights and the logits get gradients; in eval it uses the softmax expectation, or
one candidate when :meth:`EfficientFormerSupernet.set_subnet` fixed it (the weight-sharing
evaluation of the slimming step). MB3D works on tokens, so inside a 4-D stage its path
flattens the map, runs the block and views the tokens back as a map.

Width reduction is evaluated with the supernet's weights by channel masking: with a stage
width ``w`` smaller than the supernet's, every channel >= ``w`` of that stage's residual
stream is zeroed after the embedding and after each block (an approximation of the narrower
network, good enough to rank actions).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from mmeff.models.backbones.efficientformer.backbone import EfficientFormer
from mmeff.models.backbones.efficientformer.blocks import MB3D, MB4D, ConvStem, tokens_to_map
from mmeff.models.layers import ConvBN
from mmeff.registry import MODELS
from mmeff.search.space import Subnet, stage_choices

#: parameter-name marker of the architecture logits (the optimizer gives them their own group)
ARCH_PARAM = 'arch_logits'


class MB3DOnMap(nn.Module):
    """An MB3D inside a 4-D MetaPath: (B, C, H, W) -> tokens -> MB3D -> (B, C, H, W)."""

    def __init__(self, dim: int, mlp_ratio: float, layer_scale_init: float,
                 table_size: Sequence[int]):
        super().__init__()
        self.block = MB3D(dim, mlp_ratio, layer_scale_init=layer_scale_init,
                          table_size=table_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = (x.shape[2], x.shape[3])
        return tokens_to_map(self.block(x.flatten(2).transpose(1, 2), hw), hw)


class MetaPath(nn.Module):
    """One searchable block position: candidates ``choices`` mixed by Gumbel softmax."""

    def __init__(self, dim: int, choices: Sequence[str], mlp_ratio: float = 4.0,
                 layer_scale_init: float = 1e-5, table_size: Sequence[int] = (7, 7)):
        super().__init__()
        self.choices: Tuple[str, ...] = tuple(choices)
        paths = {}
        for c in self.choices:
            if c == '4d':
                paths[c] = MB4D(dim, mlp_ratio, layer_scale_init=layer_scale_init)
            elif c == '3d':
                paths[c] = MB3DOnMap(dim, mlp_ratio, layer_scale_init, table_size)
            elif c != 'id':
                raise ValueError(f"MetaPath choices are '4d', '3d', 'id', got {c!r}")
        self.paths = nn.ModuleDict(paths)
        self.arch_logits = nn.Parameter(torch.zeros(len(self.choices)))
        self.tau = 1.0
        self.fixed: Optional[str] = None

    def run(self, choice: str, x: torch.Tensor) -> torch.Tensor:
        return x if choice == 'id' else self.paths[choice](x)

    def mixing_weights(self) -> torch.Tensor:
        """Eqn. 8: softmax((alpha + g) / tau) with Gumbel noise g in training, softmax(alpha)
        in eval."""
        if self.training:
            return F.gumbel_softmax(self.arch_logits, tau=self.tau, hard=False)
        return self.arch_logits.softmax(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            return self.run(self.fixed, x)
        weights = self.mixing_weights()
        return sum(weights[k] * self.run(c, x) for k, c in enumerate(self.choices))

    def probabilities(self) -> Dict[str, float]:
        """Selection probability per candidate (the alpha of the importance scores)."""
        p = self.arch_logits.detach().softmax(0)
        return {c: float(p[k]) for k, c in enumerate(self.choices)}


@MODELS.register_module()
class EfficientFormerSupernet(BaseModule):
    """Single-width EfficientFormer supernet: conv stem, stride-2 embeddings and MetaPaths.

    Args:
        widths: supernet width per stage (the search only reduces them).
        depths: MetaPaths per stage (the maximum depth).
        mlp_ratio, layer_scale_init: as in :class:`EfficientFormer`.
        img_size: training resolution (sizes the attention-bias tables of stages 3-4).
        tau: Gumbel-softmax temperature.
        out_indices: stages returned (a classifier reads the last).
    """

    def __init__(self, widths: Sequence[int] = (48, 96, 224, 448),
                 depths: Sequence[int] = (4, 4, 8, 6), mlp_ratio: float = 4.0,
                 layer_scale_init: float = 1e-5, img_size: int = 224, tau: float = 1.0,
                 in_channels: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if len(widths) != 4 or len(depths) != 4 or min(depths) < 1 or min(widths) < 2:
            raise ValueError(f'supernet needs 4 widths >= 2 and 4 depths >= 1, got '
                             f'widths={widths!r}, depths={depths!r}')
        self.widths = [int(w) for w in widths]
        self.depths = [int(d) for d in depths]
        self.img_size = img_size
        self.out_indices = tuple(i % 4 for i in out_indices)
        self.stem = ConvStem(in_channels, self.widths[0])
        self.embeds = nn.ModuleList(
            nn.Identity() if i == 0 else ConvBN(self.widths[i - 1], self.widths[i], 3, stride=2,
                                                bias=True) for i in range(4))
        sizes = [img_size]
        for _ in range(5):
            sizes.append(-(-sizes[-1] // 2))
        self.stages = nn.ModuleList(
            nn.ModuleList(MetaPath(self.widths[i], stage_choices(i), mlp_ratio,
                                   layer_scale_init, (sizes[i + 2], sizes[i + 2]))
                          for _ in range(self.depths[i])) for i in range(4))
        self.active_widths: List[int] = list(self.widths)
        self.set_tau(tau)
        EfficientFormer._init_fresh(self)

    # ----------------------------------------------------------------------------- search api
    def set_tau(self, tau: float) -> None:
        if tau <= 0:
            raise ValueError(f'Gumbel-softmax temperature must be > 0, got {tau}')
        for mp in self.meta_paths():
            mp.tau = tau

    def meta_paths(self) -> List[MetaPath]:
        return [mp for stage in self.stages for mp in stage]

    def arch_parameters(self) -> List[nn.Parameter]:
        return [mp.arch_logits for mp in self.meta_paths()]

    def probabilities(self) -> List[List[Dict[str, float]]]:
        return [[mp.probabilities() for mp in stage] for stage in self.stages]

    def set_subnet(self, subnet: Optional[Subnet]) -> None:
        """Fix every MetaPath to the subnet's choice and mask the channels beyond its widths;
        ``None`` returns to the mixed supernet."""
        if subnet is None:
            for mp in self.meta_paths():
                mp.fixed = None
            self.active_widths = list(self.widths)
            return
        if [len(s) for s in subnet.blocks] != self.depths or any(
                w > W for w, W in zip(subnet.widths, self.widths)):
            raise ValueError(f'subnet {subnet.describe()} does not fit the supernet '
                             f'(widths {self.widths}, depths {self.depths})')
        for stage, choices in zip(self.stages, subnet.blocks):
            for mp, c in zip(stage, choices):
                mp.fixed = c
        self.active_widths = list(subnet.widths)

    def full_subnet(self) -> Subnet:
        """The largest subnet: MB4D everywhere, at the supernet widths."""
        return Subnet.create(self.widths, [['4d'] * d for d in self.depths])

    # -------------------------------------------------------------------------------- forward
    def _mask(self, x: torch.Tensor, i: int) -> torch.Tensor:
        w = self.active_widths[i]
        if w >= self.widths[i]:
            return x
        mask = torch.zeros(self.widths[i], device=x.device, dtype=x.dtype)
        mask[:w] = 1
        return x * mask.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i in range(4):
            x = self._mask(self.embeds[i](x), i)
            for mp in self.stages[i]:
                x = self._mask(mp(x), i)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
