"""The search space of EfficientFormerV2's joint search (the V2 paper §2.2 / Alg. 1).

A subnet is described by the arch dict of :class:`mmeff.EfficientFormerV2`
(``widths`` (4), ``depths`` (4), ``mlp_ratios`` (one per block), ``num_attn``), so a searched
subnet is built by the standalone backbone directly. The space bounds every value by the
supernet's largest arch:

- width ``C_j`` of stage j: one of ``width_choices[j]`` (the largest is the max arch's width);
- depth ``N_j``: ``min_depths[j]`` .. the max arch's depth; a shallower stage drops its *last*
  blocks (elastic depth);
- expansion ratio ``E_ij`` of every FFN: one of ``ratio_choices`` not above the max arch's ratio
  of that block;
- ``num_attn`` (attention blocks at the end of stages 3 and 4): one of ``num_attn_choices``
  (by default only the max arch's: the paper's search does not change the block types).
"""
import numbers
import random
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from mmeff.models.backbones.efficientformer_v2.arch import validate_arch

Choices = Tuple[Tuple[int, ...], ...]


def _sorted_ints(values, name: str) -> Tuple[int, ...]:
    if isinstance(values, numbers.Integral):
        values = (values,)
    if not isinstance(values, Sequence) or not values or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
            for v in values):
        raise ValueError(f'{name} must be a non-empty sequence of positive ints, got {values!r}')
    return tuple(sorted({int(v) for v in values}))


@dataclass(frozen=True)
class V2SearchSpace:
    """The choices of the slimmable EfficientFormerV2 supernet (build with :meth:`create`).

    Attributes:
        max_arch: the largest subnet (normal form of ``validate_arch``).
        width_choices: per stage, the widths (ascending; the last is ``max_arch['widths'][j]``).
        ratio_choices: expansion ratios of the FFNs (ascending).
        min_depths: per stage, the fewest blocks.
        num_attn_choices: allowed ``num_attn`` values (ascending).
    """

    max_arch: dict
    width_choices: Choices
    ratio_choices: Tuple[float, ...]
    min_depths: Tuple[int, ...]
    num_attn_choices: Tuple[int, ...]

    @classmethod
    def create(cls, max_arch: dict, width_choices: Sequence[Sequence[int]],
               ratio_choices: Sequence[float] = (2, 3, 4),
               min_depths: Optional[Sequence[int]] = None,
               num_attn_choices: Optional[Sequence[int]] = None) -> 'V2SearchSpace':
        """Check the choices against the max arch; every error names the value to change."""
        max_arch = validate_arch(dict(max_arch))
        widths, depths = max_arch['widths'], max_arch['depths']
        if not isinstance(width_choices, Sequence) or len(width_choices) != 4:
            raise ValueError('width_choices must give the widths of each of the 4 stages, e.g. '
                             f'((24, 32), (32, 48), (64, 96), (128, 176)), got {width_choices!r}')
        width_choices = tuple(_sorted_ints(c, f'width_choices[{i}]')
                              for i, c in enumerate(width_choices))
        for i, (choices, w) in enumerate(zip(width_choices, widths)):
            if choices[-1] != w:
                raise ValueError(f'width_choices[{i}] = {choices} must end at the max arch width '
                                 f'{w} of stage {i + 1}: add {w} or change the arch widths')
        if any(w % 2 for w in width_choices[0]):
            raise ValueError(f'width_choices[0] = {width_choices[0]} must be even (the stem '
                             'uses half of the width)')
        if not isinstance(ratio_choices, Sequence) or not ratio_choices or not all(
                isinstance(r, numbers.Real) and r > 0 for r in ratio_choices):
            raise ValueError(f'ratio_choices must be positive numbers, got {ratio_choices!r}')
        ratio_choices = tuple(sorted(set(ratio_choices)))
        for i, stage in enumerate(max_arch['mlp_ratios']):
            for j, r in enumerate(stage):
                if r not in ratio_choices:
                    raise ValueError(f"max arch mlp_ratios[{i}][{j}] = {r} is not one of "
                                     f'ratio_choices {ratio_choices}: add it to ratio_choices')
        min_depths = depths if min_depths is None else _int4(min_depths, 'min_depths')
        for i, (lo, hi) in enumerate(zip(min_depths, depths)):
            if not 1 <= lo <= hi:
                raise ValueError(f'min_depths[{i}] = {lo} must be in 1..{hi} (the max arch '
                                 f'depth of stage {i + 1})')
        num_attn_choices = (max_arch['num_attn'],) if num_attn_choices is None else \
            tuple(sorted({int(a) for a in num_attn_choices}))
        if num_attn_choices[0] < 0 or num_attn_choices[-1] > min(min_depths[2:]):
            raise ValueError(f'num_attn_choices {num_attn_choices} must lie in 0..'
                             f'{min(min_depths[2:])} (min_depths of stages 3-4: every subnet '
                             'keeps its attention blocks at the end of those stages)')
        if max_arch['num_attn'] != num_attn_choices[-1]:
            raise ValueError(f"max arch num_attn = {max_arch['num_attn']} must be the largest "
                             f'of num_attn_choices {num_attn_choices}')
        return cls(max_arch, width_choices, ratio_choices, tuple(min_depths), num_attn_choices)

    # ----------------------------------------------------------------------------- derived
    @property
    def max_depths(self) -> Tuple[int, ...]:
        return self.max_arch['depths']

    def block_ratio_choices(self, stage: int, block: int) -> Tuple[float, ...]:
        """The expansion ratios of block ``block`` of ``stage``: the choices up to the max
        arch's ratio there."""
        top = self.max_arch['mlp_ratios'][stage][block]
        return tuple(r for r in self.ratio_choices if r <= top)

    @property
    def min_arch(self) -> dict:
        """The smallest subnet: smallest widths, ``min_depths``, smallest ratio and num_attn."""
        return validate_arch(dict(
            widths=tuple(c[0] for c in self.width_choices), depths=self.min_depths,
            mlp_ratios=tuple((self.ratio_choices[0],) * d for d in self.min_depths),
            num_attn=self.num_attn_choices[0]))

    def sample(self, rng: random.Random) -> dict:
        """A subnet drawn uniformly per choice (width and depth per stage, ratio per block)."""
        depths = tuple(rng.randint(lo, hi) for lo, hi in zip(self.min_depths, self.max_depths))
        return validate_arch(dict(
            widths=tuple(rng.choice(c) for c in self.width_choices), depths=depths,
            mlp_ratios=tuple(tuple(rng.choice(self.block_ratio_choices(i, j)) for j in range(d))
                             for i, d in enumerate(depths)),
            num_attn=rng.choice(self.num_attn_choices)))

    # ---------------------------------------------------------------------------- checking
    def validate(self, arch: dict) -> dict:
        """``arch`` in normal form if it is a subnet of this space; else a ValueError that
        names the entry and the values it may take."""
        if not isinstance(arch, dict):
            raise TypeError(f'a subnet is an EfficientFormerV2 arch dict, got {type(arch).__name__}')
        arch = validate_arch(dict(arch))
        for i, (w, choices) in enumerate(zip(arch['widths'], self.width_choices)):
            if w not in choices:
                raise ValueError(f'subnet widths[{i}] = {w} is not a width choice of stage '
                                 f'{i + 1}: use one of {choices}')
        for i, (d, lo, hi) in enumerate(zip(arch['depths'], self.min_depths, self.max_depths)):
            if not lo <= d <= hi:
                raise ValueError(f'subnet depths[{i}] = {d} is outside the supernet\'s depths '
                                 f'of stage {i + 1}: use {lo}..{hi}')
        for i, stage in enumerate(arch['mlp_ratios']):
            for j, r in enumerate(stage):
                allowed = self.block_ratio_choices(i, j)
                if r not in allowed:
                    raise ValueError(f'subnet mlp_ratios[{i}][{j}] = {r} is not an expansion '
                                     f'choice of that block: use one of {allowed}')
        if arch['num_attn'] not in self.num_attn_choices:
            raise ValueError(f"subnet num_attn = {arch['num_attn']} is not a choice of the "
                             f'supernet: use one of {self.num_attn_choices}')
        return arch


def _int4(values, name: str) -> Tuple[int, ...]:
    if not isinstance(values, Sequence) or len(values) != 4 or not all(
            isinstance(v, numbers.Integral) for v in values):
        raise ValueError(f'{name} must be 4 ints (one per stage), got {values!r}')
    return tuple(int(v) for v in values)
