"""EfficientFormerV2's search (V2 paper Alg. 1): iterative slimming of the supernet by the
accuracy drop per MES gain, until a target MES (or latency, or parameter count) is reached.

At each step every action of :meth:`V2Space.actions` is predicted (latency from the table,
parameters counted exactly), evaluated with the supernet's shared weights, and the action with
the smallest accuracy drop per unit of gain (MES gained by default) is executed
(:func:`mmeff.search.slimming.greedy_slim`, the loop V1's search uses too).

Before slimming, the start is checked to lie in the space and the target to be reachable by
the space's smallest subnet: both fail with a message naming what to change.
"""
from typing import Callable, List, Optional

from mmeff.search.mes import mes
from mmeff.search.slimming import Goal, Step, greedy_slim
from mmeff.search.v2_space import V2Space, V2Subnet

Log = Callable[[str], None]
TARGET_FLAGS = dict(mes='--target-mes', latency='--target-latency', params='--target-params')


def check_reachable(space: V2Space, goal: Goal, latency_fn: Callable[[V2Subnet], float],
                    params_fn: Callable[[V2Subnet], float]) -> None:
    """ValueError when even the space's smallest subnet misses ``goal`` (naming its value)."""
    smallest = space.min_subnet
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


def slim_v2(space: V2Space, goal: Goal, latency_fn: Callable[[V2Subnet], float],
            accuracy_fn: Callable[[V2Subnet], float], params_fn: Callable[[V2Subnet], float],
            start: Optional[V2Subnet] = None, max_steps: int = 1000,
            log: Optional[Log] = None) -> List[Step]:
    """Alg. 1 of the V2 paper from ``start`` (default: the largest subnet) to ``goal``;
    returns every step (``Step.subnet`` is a :class:`V2Subnet`)."""
    start = space.check(start or space.max_subnet)
    check_reachable(space, goal, latency_fn, params_fn)
    return greedy_slim(start, space.actions, goal, latency_fn, accuracy_fn, params_fn,
                       max_steps, log, floor_hint='the greedy path ended in a corner of the '
                       'space where no action gains; relax the target')
