"""Latency-driven slimming (EfficientFormer Alg. 1) with a latency or MES objective.

Importance of a MetaPath from its selection probabilities alpha (softmax of the trained
architecture logits; the paper's ratio of raw logits is undefined for non-positive logits):
``alpha_4D / alpha_I`` in stages 1-2, ``(alpha_3D + alpha_4D) / alpha_I`` in stages 3-4; a
stage's importance is the sum over its remaining blocks. Each step considers three actions:

* DR, depth reduction: the least important remaining MetaPath becomes identity;
* MR, MB3D reduction: the first MB3D becomes MB4D;
* WR, width reduction: the least important stage (whose narrowing saves latency) loses
  ``step`` (16) channels;

predicts each action's latency with the lookup table, evaluates its accuracy (in the
pipeline: the supernet's weights on a validation subset), and executes the action with the
smallest accuracy drop per unit of gain — per ms saved (``objective='latency'``) or per MES
point gained (``objective='mes'``, EfficientFormerV2's joint size/speed score). It repeats
until the predicted latency is at or below the target. Actions that would empty a stage,
go below ``min_width`` or not gain anything are not candidates.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mmeff.search.mes import mes
from mmeff.search.space import Subnet

OBJECTIVES = ('latency', 'mes')
Probabilities = Sequence[Sequence[Dict[str, float]]]
#: a network of a search space: hashable, with ``describe()`` (Subnet, V2Subnet)
Net = Any


def importance_scores(probabilities: Probabilities) -> List[List[float]]:
    """Per-MetaPath importance (see module docstring) from per-candidate probabilities."""
    scores = []
    for i, stage in enumerate(probabilities):
        row = []
        for p in stage:
            keep = p.get('4d', 0.0) + (p.get('3d', 0.0) if i >= 2 else 0.0)
            row.append(keep / max(p['id'], 1e-12))
        scores.append(row)
    return scores


def initial_subnet(widths: Sequence[int], probabilities: Probabilities) -> Subnet:
    """Starting point of the slimming: every MetaPath kept, as MB3D where the supernet prefers
    MB3D over MB4D, then normalized (MB3D moved to the end, see :mod:`.space`)."""
    blocks = [['3d' if i >= 2 and p.get('3d', 0.0) > p['4d'] else '4d' for p in stage]
              for i, stage in enumerate(probabilities)]
    return Subnet.create(widths, blocks).normalized()


@dataclass
class Candidate:
    action: str
    subnet: Net
    latency_ms: float
    params_m: float
    accuracy: float
    score: float = math.inf  # accuracy drop per unit of gain (lower is better)
    gain: float = 0.0


@dataclass
class Step:
    """One executed action and the state after it (``action='start'`` for the first row)."""

    action: str
    subnet: Net
    latency_ms: float
    params_m: float
    accuracy: float
    mes: float
    candidates: List[Candidate] = field(default_factory=list)


def candidate_actions(subnet: Subnet, importance: Sequence[Sequence[float]], step: int = 16,
                      min_width: int = 16,
                      latency_fn: Optional[Callable[[Subnet], float]] = None
                      ) -> Dict[str, Subnet]:
    """The (up to three) actions of Alg. 1 applicable to ``subnet``.

    With ``latency_fn``, width reduction goes to the least important stage whose narrowing
    lowers the predicted latency (a measured table is not monotonic everywhere: one width
    step can cost as much as the next), trying the stages in order of importance.
    """
    depths = subnet.depths
    actions: Dict[str, Subnet] = {}
    removable = [(importance[i][j], i, j) for i, j, _ in subnet.active() if depths[i] > 1]
    if removable:
        _, i, j = min(removable)
        blocks = [list(s) for s in subnet.blocks]
        blocks[i][j] = 'id'
        actions[f'DR(stage {i}, block {j})'] = Subnet.create(subnet.widths, blocks)
    first_3d = next(((i, j) for i, j, c in subnet.active() if c == '3d'), None)
    if first_3d is not None:
        blocks = [list(s) for s in subnet.blocks]
        blocks[first_3d[0]][first_3d[1]] = '4d'
        actions[f'MR(stage {first_3d[0]}, block {first_3d[1]})'] = \
            Subnet.create(subnet.widths, blocks)
    stage_scores = [(sum(importance[i][j] for i2, j, _ in subnet.active() if i2 == i), i)
                    for i in range(4) if subnet.widths[i] - step >= min_width]
    base = latency_fn(subnet) if latency_fn is not None else None
    for _, i in sorted(stage_scores):
        widths = list(subnet.widths)
        widths[i] -= step
        narrower = Subnet.create(widths, subnet.blocks)
        if base is not None and latency_fn(narrower) >= base:
            continue  # no saving here: consider the next least important stage
        actions[f'WR(stage {i}, {subnet.widths[i]}->{widths[i]})'] = narrower
        break
    return actions


@dataclass(frozen=True)
class Goal:
    """Where a slimming stops and what counts as progress.

    ``kind`` names the metric of the stop (``'latency'``: at or below ``target`` ms,
    ``'params'``: at or below ``target`` M parameters, ``'mes'``: at or above ``target``
    MES); ``objective`` the gain an action's accuracy drop is divided by (ms saved, M
    parameters saved or MES gained). An action is a candidate only when it gains and moves
    the stop metric strictly towards the target: a step that does not, never reaches it.
    """

    kind: str
    target: float
    objective: str = 'latency'

    def __post_init__(self):
        for name, value in (('target kind', self.kind), ('objective', self.objective)):
            if value not in GOALS:
                raise ValueError(f'unknown search {name} {value!r}; choose one of {GOALS}')

    def value(self, latency_ms: float, params_m: float) -> float:
        return dict(latency=latency_ms, params=params_m)[self.kind] \
            if self.kind != 'mes' else mes(latency_ms, params_m)

    def reached(self, latency_ms: float, params_m: float) -> bool:
        v = self.value(latency_ms, params_m)
        return v >= self.target if self.kind == 'mes' else v <= self.target

    def gain(self, cur: Tuple[float, float], new: Tuple[float, float]) -> float:
        """Progress from ``cur`` to ``new`` (latency_ms, params_m); <= 0 is no candidate."""
        if self.kind == 'mes':
            closer = mes(*new) > mes(*cur)
        else:
            closer = self.value(*new) < self.value(*cur)
        if not closer:
            return 0.0
        if self.objective == 'mes':
            return mes(*new) - mes(*cur)
        return cur[0] - new[0] if self.objective == 'latency' else cur[1] - new[1]

    def text(self) -> str:
        return dict(latency=f'{self.target} ms', params=f'{self.target} M params',
                    mes=f'MES {self.target}')[self.kind]

    def floor_text(self, latency_ms: float, params_m: float) -> str:
        """What the smallest network reached instead of the target."""
        if self.kind == 'latency':
            return f'{latency_ms:.3f} ms'
        if self.kind == 'params':
            return f'{params_m:.4f} M params'
        return f'MES {mes(latency_ms, params_m):.2f}'


GOALS = ('latency', 'params', 'mes')


def greedy_slim(start: Net, actions: Callable[[Net], Dict[str, Net]], goal: Goal,
                latency_fn: Callable[[Net], float], accuracy_fn: Callable[[Net], float],
                params_fn: Callable[[Net], float], max_steps: int = 1000,
                log: Optional[Callable[[str], None]] = None, stop_at_floor: bool = False,
                floor_hint: str = 'raise the target', ties_by_gain: bool = False) -> List[Step]:
    """The loop of Alg. 1 for any search space (EfficientFormer's and EfficientFormerV2's).

    From ``start`` until ``goal`` is reached: evaluate every action of ``actions(net)`` that
    makes progress (:meth:`Goal.gain`), execute the one with the smallest accuracy drop per
    unit of gain, repeat. ``net`` is any hashable network description with ``describe()``.
    With no candidate left, raises ValueError (naming ``floor_hint``) or, with
    ``stop_at_floor``, returns the steps so far and logs the shortfall. ``ties_by_gain``: among
    equal scores (e.g. several actions that cost no accuracy on a small validation split) the
    larger gain wins, instead of the first action in ``actions`` order.
    """
    cur = start
    lat, params, acc = latency_fn(cur), params_fn(cur), accuracy_fn(cur)
    history = [Step('start', cur, lat, params, acc, mes(lat, params))]
    if log:
        log(_row(history[-1]))
    while not goal.reached(lat, params):
        if len(history) > max_steps:
            raise ValueError(f'slimming did not reach {goal.text()} in {max_steps} steps')
        cands = []
        for name, sub in actions(cur).items():
            c_lat, c_params = latency_fn(sub), params_fn(sub)
            gain = goal.gain((lat, params), (c_lat, c_params))
            if gain <= 0:
                continue
            c = Candidate(name, sub, c_lat, c_params, accuracy_fn(sub), gain=gain)
            c.score = (acc - c.accuracy) / gain
            cands.append(c)
        if not cands:
            reached = goal.floor_text(lat, params)
            if stop_at_floor:
                if log:
                    log(f'[slim] target {goal.text()} not reachable: the smallest network '
                        f'of the space from here has {reached} ({cur.describe()})')
                break
            verb = 'raises' if goal.kind == 'mes' else 'lowers'
            raise ValueError(f'no slimming action {verb} the {goal.kind} beyond {reached} '
                             f'(target {goal.text()}) from {cur.describe()}: {floor_hint}')
        best = min(cands, key=lambda c: (c.score, -c.gain if ties_by_gain else 0))
        cur, lat, params, acc = best.subnet, best.latency_ms, best.params_m, best.accuracy
        history.append(Step(best.action, cur, lat, params, acc, mes(lat, params), cands))
        if log:
            log(_row(history[-1]))
    return history


def slim(start: Subnet, importance: Sequence[Sequence[float]], target_ms: float,
         latency_fn: Callable[[Subnet], float], accuracy_fn: Callable[[Subnet], float],
         params_fn: Callable[[Subnet], float], objective: str = 'latency', step: int = 16,
         min_width: int = 16, max_steps: int = 1000,
         log: Optional[Callable[[str], None]] = None, stop_at_floor: bool = False
         ) -> List[Step]:
    """Run EfficientFormer's Alg. 1 from ``start`` until ``latency_fn`` <= ``target_ms``;
    returns every step (:func:`greedy_slim` with :func:`candidate_actions`).

    ``latency_fn`` is the LUT prediction, ``accuracy_fn`` the (weight-sharing) accuracy in %,
    ``params_fn`` the size in M parameters (for MES). Raises ValueError when no action can
    reach the target (e.g. every stage is already at ``min_width`` and depth 1), unless
    ``stop_at_floor``: then the steps so far are returned (the smallest reachable network)
    and the shortfall is logged.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f'unknown search objective {objective!r}; choose one of {OBJECTIVES}')
    if any(w % step for w in start.widths):
        raise ValueError(f'start widths {list(start.widths)} must be multiples of {step}')
    return greedy_slim(
        start, lambda sub: candidate_actions(sub, importance, step, min_width, latency_fn),
        Goal('latency', target_ms, objective), latency_fn, accuracy_fn, params_fn, max_steps,
        log, stop_at_floor, 'lower min_width or raise the target')


def _row(s: Step) -> str:
    return (f'{s.action:<28} lat {s.latency_ms:8.3f} ms  params {s.params_m:6.3f} M  '
            f'acc {s.accuracy:6.2f}%  MES {s.mes:9.2f}  {s.subnet.describe()}')
