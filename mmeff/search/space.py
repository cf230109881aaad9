"""The search space of EfficientFormer's latency-driven slimming (paper §4.2, Eqn. 7).

A :class:`Subnet` is one point of it: a width per stage and, per stage, one choice per
MetaPath: ``'4d'`` (MB4D), ``'3d'`` (MB3D, stages 3-4 only) or ``'id'`` (identity, the block
is removed). :meth:`Subnet.to_arch` turns it into the ``arch`` dict of
:class:`mmeff.models.backbones.EfficientFormer`.

Expressibility rule: EfficientFormer places its ``num_vit`` MB3D blocks at the END of the
network (dimension-consistent design, §3). A subnet is expressible when its MB3D blocks are
the last non-identity blocks; :meth:`Subnet.normalized` moves them there (same number of
MB3D, same depths and widths, hence the same latency-table prediction), and the slimming
actions keep that property (depth reduction removes a block, MB3D reduction turns the FIRST
MB3D into MB4D).
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

CHOICES_4D_STAGES: Tuple[str, ...] = ('4d', 'id')
CHOICES_3D_STAGES: Tuple[str, ...] = ('4d', '3d', 'id')
NUM_STAGES = 4


def stage_choices(stage: int) -> Tuple[str, ...]:
    """Eqn. 7: {MB4D, I} in stages 1-2 (0, 1 here), {MB4D, MB3D, I} in stages 3-4."""
    return CHOICES_4D_STAGES if stage < 2 else CHOICES_3D_STAGES


@dataclass(frozen=True)
class Subnet:
    """Widths (one per stage) and the MetaPath choices (one tuple per stage)."""

    widths: Tuple[int, ...]
    blocks: Tuple[Tuple[str, ...], ...]

    def __post_init__(self):
        if len(self.widths) != NUM_STAGES or len(self.blocks) != NUM_STAGES:
            raise ValueError(f'a Subnet has {NUM_STAGES} widths and {NUM_STAGES} block tuples, '
                             f'got {len(self.widths)} and {len(self.blocks)}')
        for i, stage in enumerate(self.blocks):
            bad = [c for c in stage if c not in stage_choices(i)]
            if bad:
                raise ValueError(f'stage {i} allows choices {stage_choices(i)}, got {bad}')

    @classmethod
    def create(cls, widths: Sequence[int], blocks: Sequence[Sequence[str]]) -> 'Subnet':
        return cls(tuple(int(w) for w in widths), tuple(tuple(b) for b in blocks))

    @classmethod
    def from_arch(cls, arch: Dict) -> 'Subnet':
        """The subnet of an ``EfficientFormer`` arch dict (no identity blocks)."""
        depths, num_vit = list(arch['depths']), int(arch['num_vit'])
        flat = ['4d'] * (sum(depths) - num_vit) + ['3d'] * num_vit
        blocks, start = [], 0
        for d in depths:
            blocks.append(flat[start:start + d])
            start += d
        return cls.create(arch['widths'], blocks)

    @property
    def depths(self) -> List[int]:
        return [sum(c != 'id' for c in stage) for stage in self.blocks]

    @property
    def num_vit(self) -> int:
        return sum(c == '3d' for stage in self.blocks for c in stage)

    def active(self) -> List[Tuple[int, int, str]]:
        """(stage, index, choice) of every non-identity MetaPath, in network order."""
        return [(i, j, c) for i, stage in enumerate(self.blocks) for j, c in enumerate(stage)
                if c != 'id']

    def is_expressible(self) -> bool:
        kinds = [c for _, _, c in self.active()]
        n3 = kinds.count('3d')
        return all(k == '3d' for k in kinds[len(kinds) - n3:]) and min(self.depths) > 0

    def normalized(self) -> 'Subnet':
        """Same widths, depths and number of MB3D, with the MB3D moved to the end."""
        active = self.active()
        n3 = sum(c == '3d' for _, _, c in active)
        blocks = [list(stage) for stage in self.blocks]
        for k, (i, j, _) in enumerate(active):
            blocks[i][j] = '3d' if k >= len(active) - n3 else '4d'
        return Subnet.create(self.widths, blocks)

    def to_arch(self) -> Dict:
        """``dict(widths, depths, num_vit)`` for ``EfficientFormer(arch=...)``."""
        if not self.is_expressible():
            raise ValueError(f'subnet {self} is not expressible as an EfficientFormer arch (MB3D '
                             'must be the last blocks and no stage empty); call .normalized()')
        return dict(widths=list(self.widths), depths=self.depths, num_vit=self.num_vit)

    def describe(self) -> str:
        a = self.to_arch() if self.is_expressible() else None
        return (f'widths={list(self.widths)} depths={self.depths} num_vit={self.num_vit}'
                + ('' if a else ' (not expressible)'))
