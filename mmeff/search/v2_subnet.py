"""One network of EfficientFormerV2's search, its exact size and its parts.

A :class:`V2Subnet` is one network: a width per stage, a depth per stage, the FFN expansion
ratio of every block and the number of attention blocks at the end of stages 3 and 4 — the
``arch`` dict of :class:`mmeff.models.backbones.EfficientFormerV2` (:meth:`V2Subnet.to_arch`),
so what the search finds is what the backbone builds. It is the arch dict in a hashable form
(the search caches accuracy, latency and size per network); the choices of the space are the
supernet's (:class:`mmeff.search.v2_space.V2SearchSpace`).

Parameters are counted exactly (:class:`V2ParamCounter`): the classifier's count is the sum of
its parts (stem, stage entries, blocks, head), each built once per distinct setting and cached;
a test checks the sum against the built ``efficientformer_v2_classifier`` for several archs.
Building the whole classifier per candidate takes 0.3-3 s; the search counts hundreds.
"""
import functools
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

from torch import nn

from mmeff.models.backbones.efficientformer_v2.arch import validate_arch

NUM_STAGES = 4
#: stages (0-based) whose last ``num_attn`` blocks hold attention (paper stages 3 and 4)
ATTN_STAGES = (2, 3)


@dataclass(frozen=True)
class V2Subnet:
    """One EfficientFormerV2 architecture, hashable (the search caches per network)."""

    widths: Tuple[int, ...]
    depths: Tuple[int, ...]
    mlp_ratios: Tuple[Tuple[float, ...], ...]
    num_attn: int

    @classmethod
    def from_arch(cls, arch: Dict) -> 'V2Subnet':
        """The subnet of an ``EfficientFormerV2`` arch dict (validated by the family's check)."""
        a = validate_arch(dict(arch))
        return cls(a['widths'], a['depths'], a['mlp_ratios'], a['num_attn'])

    def to_arch(self) -> Dict:
        """``dict(widths, depths, mlp_ratios, num_attn)`` for ``EfficientFormerV2(arch=...)``."""
        return dict(widths=list(self.widths), depths=list(self.depths),
                    mlp_ratios=[list(r) for r in self.mlp_ratios], num_attn=self.num_attn)

    def uses_attn(self, stage: int, block: int) -> bool:
        """Whether block ``block`` of ``stage`` holds attention (as the backbone builds it)."""
        return stage in ATTN_STAGES and block >= self.depths[stage] - self.num_attn

    def replace(self, stage: int, width: Optional[int] = None,
                ratios: Optional[Tuple[float, ...]] = None) -> 'V2Subnet':
        """A copy with ``stage``'s width and/or its per-block ratios (hence depth) changed."""
        widths, all_ratios = list(self.widths), list(self.mlp_ratios)
        if width is not None:
            widths[stage] = width
        if ratios is not None:
            all_ratios[stage] = tuple(ratios)
        return V2Subnet(tuple(widths), tuple(len(r) for r in all_ratios), tuple(all_ratios),
                        self.num_attn)

    def describe(self) -> str:
        ratios = '|'.join(''.join(_fmt(r) for r in stage) for stage in self.mlp_ratios)
        return (f'widths={list(self.widths)} depths={list(self.depths)} ratios={ratios} '
                f'num_attn={self.num_attn}')


def _fmt(ratio: float) -> str:
    return f'{ratio:g}' if len(f'{ratio:g}') == 1 else f'({ratio:g})'


class V2ParamCounter:
    """Exact parameter count (M) of the EfficientFormerV2 classifier of a :class:`V2Subnet`
    (``efficientformer_v2_classifier(arch, num_classes, distillation=False, img_size,
    layer_scale_init)``), summed over its parts, each part built once per setting."""

    def __init__(self, num_classes: int, img_size: Union[int, Sequence[int]] = 224,
                 layer_scale_init: Optional[float] = 1e-5, in_channels: int = 3):
        from mmeff.models.backbones.efficientformer_v2.blocks import ceil_div
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes = num_classes
        self.layer_scale_init = layer_scale_init
        self.in_channels = in_channels
        self.grid16 = tuple(ceil_div(s, 16) for s in size)
        self.grid32 = tuple(ceil_div(s, 32) for s in size)
        self._count = functools.lru_cache(maxsize=None)(self._part)

    def __call__(self, sub: V2Subnet) -> float:
        w = sub.widths
        total = self._count('stem', 0, self.in_channels, w[0])
        for i in range(NUM_STAGES):
            if i > 0:
                total += self._count('embed', i, w[i - 1], w[i])
            for j, r in enumerate(sub.mlp_ratios[i]):
                total += self._count('attn' if sub.uses_attn(i, j) else 'ffn', i, w[i], r)
        return (total + self._count('head', 3, w[3], 0)) / 1e6

    def _part(self, op: str, stage: int, a: float, b: float) -> int:
        return sum(p.numel() for p in v2_part(op, stage, a, b, self.grid16, self.grid32,
                                              self.num_classes,
                                              self.layer_scale_init).parameters())


def v2_part(op: str, stage: int, a: float, b: float, grid16: Sequence[int],
            grid32: Sequence[int], num_classes: int = 1000,
            layer_scale_init: Optional[float] = 1e-5) -> nn.Module:
    """One part of the V2 classifier as the backbone builds it (what the parameter count and
    the latency table measure): ``stem`` (a = in channels, b = width), ``embed`` (entry of
    ``stage`` from width a to b, attention downsampling in stage 3), ``ffn`` / ``attn`` (a block
    of width a, expansion b), ``head`` (width a)."""
    from mmeff.models.backbones.efficientformer_v2.blocks import (Downsample,
                                                                  EfficientFormerV2Block, Stem)
    from mmeff.models.heads.efficientformer_v2_head import EfficientFormerV2ClsHead
    if op == 'stem':
        return Stem(int(a), int(b))
    if op == 'embed':
        return Downsample(int(a), int(b), use_attn=stage == 3, table_size=tuple(grid16))
    if op in ('ffn', 'attn'):
        return EfficientFormerV2Block(int(a), b, use_attn=op == 'attn',
                                      stride=2 if stage == 2 else None,
                                      table_size=tuple(grid32),
                                      layer_scale_init=layer_scale_init)
    if op == 'head':
        return EfficientFormerV2ClsHead(int(a), num_classes, distillation=False)
    raise ValueError(f'unknown V2 part {op!r}; valid: stem, embed, ffn, attn, head')
