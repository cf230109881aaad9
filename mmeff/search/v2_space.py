"""The search space of EfficientFormerV2's joint size/speed search (V2 paper §4, Alg. 1).

A :class:`V2Subnet` is one network: a width per stage, a depth per stage, the FFN expansion
ratio of every block and the number of attention blocks at the end of stages 3 and 4 — the
``arch`` dict of :class:`mmeff.models.backbones.EfficientFormerV2` (:meth:`V2Subnet.to_arch`),
so what the search finds is what the backbone builds.

A :class:`V2Space` holds the choices of the supernet (widths per stage, depth range per stage,
expansion ratios) and the slimming actions of Alg. 1 (:meth:`V2Space.actions`): shrink a
stage's width to the next smaller choice, remove the last block of a stage, reduce one FFN's
expansion ratio to the next smaller choice.

Parameters are counted exactly (:class:`V2ParamCounter`): the classifier's count is the sum of
its parts (stem, stage entries, blocks, head), each built once per distinct setting and cached;
a test checks the sum against the built ``efficientformer_v2_classifier`` for several archs.
Building the whole classifier per candidate takes 0.3-3 s; the search counts hundreds.
"""
import functools
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

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


@dataclass(frozen=True)
class V2Space:
    """The choices of an EfficientFormerV2 supernet.

    ``width_choices``: per stage, the widths a subnet may take; ``min_depths`` /
    ``max_depths``: per stage; ``ratio_choices``: the FFN expansion ratios (any block);
    ``num_attn``: attention blocks at the end of stages 3-4 (fixed: a stage keeps at least
    that many blocks).
    """

    width_choices: Tuple[Tuple[int, ...], ...]
    min_depths: Tuple[int, ...]
    max_depths: Tuple[int, ...]
    ratio_choices: Tuple[float, ...]
    num_attn: int

    def __post_init__(self):
        object.__setattr__(self, 'width_choices',
                           tuple(tuple(sorted(int(w) for w in c)) for c in self.width_choices))
        object.__setattr__(self, 'ratio_choices', tuple(sorted(self.ratio_choices)))
        if len(self.width_choices) != NUM_STAGES or len(self.min_depths) != NUM_STAGES or \
                len(self.max_depths) != NUM_STAGES:
            raise ValueError(f'a V2 search space has {NUM_STAGES} width choices and depth '
                             f'ranges, got {self.width_choices}, {self.min_depths}, '
                             f'{self.max_depths}')
        for i, (lo, hi) in enumerate(zip(self.min_depths, self.max_depths)):
            need = max(1, self.num_attn if i in ATTN_STAGES else 1)
            if not need <= lo <= hi:
                raise ValueError(f'stage {i} depth range {lo}..{hi} is empty or below '
                                 f'{need} (num_attn={self.num_attn} attention blocks end '
                                 'stages 2-3, 0-based)')
        if not self.ratio_choices or not all(c for c in self.width_choices):
            raise ValueError('a V2 search space needs at least one width per stage and one '
                             f'expansion ratio, got {self.width_choices}, {self.ratio_choices}')

    @classmethod
    def from_dict(cls, space: Dict) -> 'V2Space':
        """From ``dict(widths=[[...] x4], depths=[(min, max) x4], mlp_ratios=[...],
        num_attn=n)`` (what a supernet's ``search_space`` gives)."""
        try:
            depths = [tuple(d) for d in space['depths']]
            return cls(tuple(tuple(w) for w in space['widths']), tuple(d[0] for d in depths),
                       tuple(d[-1] for d in depths), tuple(space['mlp_ratios']),
                       int(space['num_attn']))
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f'a V2 search space is dict(widths=[choices per stage], depths='
                             f'[(min, max) per stage], mlp_ratios=[choices], num_attn=n); got '
                             f'{space!r} ({e})') from e

    @property
    def max_subnet(self) -> V2Subnet:
        return V2Subnet(tuple(c[-1] for c in self.width_choices), tuple(self.max_depths),
                        tuple((self.ratio_choices[-1],) * d for d in self.max_depths),
                        self.num_attn)

    @property
    def min_subnet(self) -> V2Subnet:
        return V2Subnet(tuple(c[0] for c in self.width_choices), tuple(self.min_depths),
                        tuple((self.ratio_choices[0],) * d for d in self.min_depths),
                        self.num_attn)

    def check(self, sub: V2Subnet) -> V2Subnet:
        """``sub`` if it lies in the space, else ValueError naming each value outside."""
        bad = []
        for i in range(NUM_STAGES):
            if sub.widths[i] not in self.width_choices[i]:
                bad.append(f'widths[{i}]={sub.widths[i]} (choices {self.width_choices[i]})')
            if not self.min_depths[i] <= sub.depths[i] <= self.max_depths[i]:
                bad.append(f'depths[{i}]={sub.depths[i]} (range {self.min_depths[i]}..'
                           f'{self.max_depths[i]})')
            wrong = sorted({r for r in sub.mlp_ratios[i] if r not in self.ratio_choices})
            if wrong:
                bad.append(f'mlp_ratios[{i}] has {wrong} (choices {self.ratio_choices})')
        if sub.num_attn != self.num_attn:
            bad.append(f'num_attn={sub.num_attn} (the supernet has {self.num_attn})')
        if bad:
            raise ValueError(f'arch outside the search space: {"; ".join(bad)}. Change the '
                             'arch to the choices given, or search a supernet whose '
                             'search_space holds them')
        return sub

    def actions(self, sub: V2Subnet) -> Dict[str, V2Subnet]:
        """Every slimming action of Alg. 1 applicable to ``sub`` (see the module docstring)."""
        acts: Dict[str, V2Subnet] = {}
        for i in range(NUM_STAGES):
            k = self.width_choices[i].index(sub.widths[i])
            if k > 0:
                w = self.width_choices[i][k - 1]
                acts[f'WR(stage {i}, {sub.widths[i]}->{w})'] = sub.replace(i, width=w)
            if sub.depths[i] > self.min_depths[i]:
                acts[f'DR(stage {i}, block {sub.depths[i] - 1})'] = \
                    sub.replace(i, ratios=sub.mlp_ratios[i][:-1])
            for j, r in enumerate(sub.mlp_ratios[i]):
                k = self.ratio_choices.index(r)
                if k > 0:
                    ratios = list(sub.mlp_ratios[i])
                    ratios[j] = self.ratio_choices[k - 1]
                    acts[f'ER(stage {i}, block {j}, {r:g}->{ratios[j]:g})'] = \
                        sub.replace(i, ratios=tuple(ratios))
        return acts

    def sample(self, rng: random.Random) -> V2Subnet:
        """A uniformly random subnet (each width, depth and ratio drawn independently)."""
        ratios = tuple(tuple(rng.choice(self.ratio_choices)
                             for _ in range(rng.randint(lo, hi)))
                       for lo, hi in zip(self.min_depths, self.max_depths))
        return V2Subnet(tuple(rng.choice(c) for c in self.width_choices),
                        tuple(len(r) for r in ratios), ratios, self.num_attn)


class V2ParamCounter:
    """Exact parameter count (M) of the EfficientFormerV2 classifier of a :class:`V2Subnet`
    (``efficientformer_v2_classifier(arch, num_classes, distillation=False, img_size,
    layer_scale_init)``), summed over its parts, each part built once per setting."""

    def __init__(self, num_classes: int, img_size: int = 224,
                 layer_scale_init: Optional[float] = 1e-5, in_channels: int = 3):
        from mmeff.models.backbones.efficientformer_v2.blocks import ceil_div
        self.num_classes = num_classes
        self.layer_scale_init = layer_scale_init
        self.in_channels = in_channels
        self.grid16 = (ceil_div(img_size, 16),) * 2
        self.grid32 = (ceil_div(img_size, 32),) * 2
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


def subnets_like(space: V2Space, count: int, mes_target: float, params_m: float,
                 tolerance: float, latency_fn, params_fn, seed: int = 0,
                 tries: int = 20000) -> List[V2Subnet]:
    """Random subnets whose MES (from ``latency_fn``, ``params_fn``) and parameter count are
    both within ``tolerance`` (relative) of ``mes_target`` and ``params_m``: the baselines a
    searched network is compared with."""
    from mmeff.search.mes import mes
    rng = random.Random(seed)
    found: List[V2Subnet] = []
    for _ in range(tries):
        sub = space.sample(rng)
        p = params_fn(sub)
        if abs(p - params_m) > tolerance * params_m or sub in found:
            continue
        if abs(mes(latency_fn(sub), p) - mes_target) <= tolerance * mes_target:
            found.append(sub)
            if len(found) == count:
                break
    return found
