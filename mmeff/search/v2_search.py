"""EfficientFormerV2's search (V2 paper Alg. 1): iterative slimming of the supernet by the
accuracy drop per MES gain, until a target MES (or latency, or parameter count) is reached.

The actions (:func:`slimming_actions`) on a subnet of the supernet's search space
(:class:`mmeff.search.v2_space.V2SearchSpace`: ``width_choices``, ``min_depths``,
``block_ratio_choices``, ``validate``, ``min_arch``, ``max_arch``, ``sample``):

* WR: shrink a stage's width to the next smaller choice;
* DR: remove the last block of a stage (elastic depth drops the last blocks);
* ER: reduce one FFN's expansion ratio to the next smaller choice of that block.

At each step every action is predicted (latency from the table, parameters counted exactly),
evaluated with the supernet's shared weights, and the action with the smallest accuracy drop
per unit of gain (MES gained by default) is executed (:func:`mmeff.search.slimming.greedy_slim`,
the loop V1's search uses too); among equal scores (on a small validation split many actions
cost no accuracy at all) the larger gain wins. ``num_attn`` is kept (the paper's search keeps
the block types).

Before slimming, the start is checked to lie in the space and the target to be reachable by
the space's smallest subnet: both fail with a message naming what to change.
"""
import random
from typing import Callable, Dict, List, Optional

from mmeff.search.mes import mes
from mmeff.search.slimming import Goal, Step, greedy_slim
from mmeff.search.v2_subnet import V2Subnet

Log = Callable[[str], None]
TARGET_FLAGS = dict(mes='--target-mes', latency='--target-latency', params='--target-params')


def slimming_actions(space, sub: V2Subnet) -> Dict[str, V2Subnet]:
    """Every action of Alg. 1 applicable to ``sub`` in ``space`` (module docstring)."""
    acts: Dict[str, V2Subnet] = {}
    for i in range(4):
        k = space.width_choices[i].index(sub.widths[i])
        if k > 0:
            w = space.width_choices[i][k - 1]
            acts[f'WR(stage {i}, {sub.widths[i]}->{w})'] = sub.replace(i, width=w)
        if sub.depths[i] > space.min_depths[i]:
            acts[f'DR(stage {i}, block {sub.depths[i] - 1})'] = \
                sub.replace(i, ratios=sub.mlp_ratios[i][:-1])
        for j, r in enumerate(sub.mlp_ratios[i]):
            choices = space.block_ratio_choices(i, j)
            k = choices.index(r)
            if k > 0:
                ratios = list(sub.mlp_ratios[i])
                ratios[j] = choices[k - 1]
                acts[f'ER(stage {i}, block {j}, {r:g}->{ratios[j]:g})'] = \
                    sub.replace(i, ratios=tuple(ratios))
    return acts


def check_reachable(space, goal: Goal, latency_fn: Callable[[V2Subnet], float],
                    params_fn: Callable[[V2Subnet], float]) -> None:
    """ValueError when even the space's smallest subnet misses ``goal`` (naming its value)."""
    smallest = V2Subnet.from_arch(space.min_arch)
    lat, params = latency_fn(smallest), params_fn(smallest)
    if goal.reached(lat, params):
        return
    value = goal.value(lat, params)
    flag = TARGET_FLAGS[goal.kind]
    bound = 'at most' if goal.kind == 'mes' else 'at least'
    raise ValueError(
        f'target {goal.text()} is out of reach: the smallest subnet of the search space '
        f'({smallest.describe()}) has {goal.floor_text(lat, params)} (latency {lat:.3f} ms, '
        f'{params:.4f} M params, MES {mes(lat, params):.2f}). Give {flag} {bound} '
        f'{value:.4g}, or a supernet whose search space has smaller choices')


def slim_v2(space, goal: Goal, latency_fn: Callable[[V2Subnet], float],
            accuracy_fn: Callable[[V2Subnet], float], params_fn: Callable[[V2Subnet], float],
            start: Optional[V2Subnet] = None, max_steps: int = 1000,
            log: Optional[Log] = None) -> List[Step]:
    """Alg. 1 of the V2 paper from ``start`` (default: the largest subnet) to ``goal``;
    returns every step (``Step.subnet`` is a :class:`V2Subnet`)."""
    start = V2Subnet.from_arch(space.validate((start or V2Subnet.from_arch(
        space.max_arch)).to_arch()))
    check_reachable(space, goal, latency_fn, params_fn)
    return greedy_slim(start, lambda sub: slimming_actions(space, sub), goal, latency_fn,
                       accuracy_fn, params_fn, max_steps, log,
                       floor_hint='the greedy path ended where no action gains; relax the '
                       'target', ties_by_gain=True)


def subnets_like(space, count: int, mes_target: float, params_m: float, tolerance: float,
                 latency_fn: Callable[[V2Subnet], float],
                 params_fn: Callable[[V2Subnet], float], seed: int = 0,
                 tries: int = 20000) -> List[V2Subnet]:
    """Random subnets of ``space`` whose MES and parameter count are both within
    ``tolerance`` (relative) of ``mes_target`` and ``params_m``: the baselines a searched
    network is compared with (same MES *and* same size)."""
    rng = random.Random(seed)
    found: List[V2Subnet] = []
    for _ in range(tries):
        sub = V2Subnet.from_arch(space.sample(rng))
        p = params_fn(sub)
        if abs(p - params_m) > tolerance * params_m or sub in found:
            continue
        if abs(mes(latency_fn(sub), p) - mes_target) <= tolerance * mes_target:
            found.append(sub)
            if len(found) == count:
                break
    return found
