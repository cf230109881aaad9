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
from typing import Callable, Dict, List, Optional, Sequence

from mmeff.search.mes import mes
from mmeff.search.space import Subnet

OBJECTIVES = ('latency', 'mes')
Probabilities = Sequence[Sequence[Dict[str, float]]]


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
    subnet: Subnet
    latency_ms: float
    params_m: float
    accuracy: float
    score: float = math.inf  # accuracy drop per unit of gain (lower is better)


@dataclass
class Step:
    """One executed action and the state after it (``action='start'`` for the first row)."""

    action: str
    subnet: Subnet
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


def slim(start: Subnet, importance: Sequence[Sequence[float]], target_ms: float,
         latency_fn: Callable[[Subnet], float], accuracy_fn: Callable[[Subnet], float],
         params_fn: Callable[[Subnet], float], objective: str = 'latency', step: int = 16,
         min_width: int = 16, max_steps: int = 1000,
         log: Optional[Callable[[str], None]] = None, stop_at_floor: bool = False
         ) -> List[Step]:
    """Run Alg. 1 from ``start`` until ``latency_fn`` <= ``target_ms``; returns every step.

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
    cur = start
    lat, params, acc = latency_fn(cur), params_fn(cur), accuracy_fn(cur)
    history = [Step('start', cur, lat, params, acc, mes(lat, params))]
    if log:
        log(_row(history[-1]))
    while lat > target_ms:
        if len(history) > max_steps:
            raise ValueError(f'slimming did not reach {target_ms} ms in {max_steps} steps')
        cur_mes = mes(lat, params)
        cands = []
        for name, sub in candidate_actions(cur, importance, step, min_width,
                                           latency_fn).items():
            c_lat, c_params = latency_fn(sub), params_fn(sub)
            gain = lat - c_lat if objective == 'latency' else mes(c_lat, c_params) - cur_mes
            if gain <= 0 or c_lat >= lat:
                continue
            c = Candidate(name, sub, c_lat, c_params, accuracy_fn(sub))
            c.score = (acc - c.accuracy) / gain
            cands.append(c)
        if not cands:
            if stop_at_floor:
                if log:
                    log(f'[slim] target {target_ms:.3f} ms not reachable: the smallest network '
                        f'of the space from here takes {lat:.3f} ms ({cur.describe()})')
                break
            raise ValueError(f'no slimming action lowers the latency below {lat:.3f} ms (target '
                             f'{target_ms:.3f} ms) from {cur.describe()}: lower min_width or '
                             'raise the target')
        best = min(cands, key=lambda c: c.score)
        cur, lat, params, acc = best.subnet, best.latency_ms, best.params_m, best.accuracy
        history.append(Step(best.action, cur, lat, params, acc, mes(lat, params), cands))
        if log:
            log(_row(history[-1]))
    return history


def _row(s: Step) -> str:
    return (f'{s.action:<28} lat {s.latency_ms:8.3f} ms  params {s.params_m:6.3f} M  '
            f'acc {s.accuracy:6.2f}%  MES {s.mes:9.2f}  {s.subnet.describe()}')
