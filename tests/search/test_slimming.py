"""Alg. 1 on a synthetic latency table and synthetic importance scores."""
import pytest

from mmeff.search.slimming import (candidate_actions, importance_scores, initial_subnet, slim)
from mmeff.search.lut import LatencyLUT
from mmeff.search.mes import mes
from mmeff.search.space import Subnet

from .helpers import full_subnet, synthetic_lut, uniform_importance


def _params(sub: Subnet) -> float:
    return sum(w * w * d for w, d in zip(sub.widths, sub.depths)) * 8 / 1e6 + 0.1


def test_importance_scores_follow_the_paper_ratios():
    probs = [[{'4d': 0.6, 'id': 0.4}], [{'4d': 0.2, 'id': 0.8}],
             [{'4d': 0.2, '3d': 0.5, 'id': 0.3}], [{'4d': 0.1, '3d': 0.1, 'id': 0.8}]]
    scores = importance_scores(probs)
    assert [s[0] for s in scores] == pytest.approx([1.5, 0.25, 0.7 / 0.3, 0.25])


def test_initial_subnet_keeps_preferred_mb3d_at_the_end():
    probs = [[{'4d': .5, 'id': .5}], [{'4d': .5, 'id': .5}],
             [{'4d': .1, '3d': .8, 'id': .1}, {'4d': .8, '3d': .1, 'id': .1}],
             [{'4d': .8, '3d': .1, 'id': .1}]]
    sub = initial_subnet((16, 32, 48, 64), probs)
    assert sub.num_vit == 1 and sub.blocks[3] == ('3d',) and sub.is_expressible()
    assert sub.to_arch() == dict(widths=[16, 32, 48, 64], depths=[1, 1, 2, 1], num_vit=1)


def test_candidates_pick_least_important_block_stage_and_first_mb3d():
    imp = uniform_importance(5.0)
    imp[2][1] = 0.1   # least important MetaPath
    imp[1] = [0.2, 0.2]  # least important stage (sum 0.4 < 0.1 + 10)
    sub = full_subnet(num_3d=2)
    acts = candidate_actions(sub, imp)
    assert set(acts) == {'DR(stage 2, block 1)', 'MR(stage 3, block 1)', 'WR(stage 1, 64->48)'}
    assert acts['DR(stage 2, block 1)'].blocks[2] == ('4d', 'id', '4d')
    assert acts['MR(stage 3, block 1)'].blocks[3] == ('4d', '4d', '3d')
    assert acts['WR(stage 1, 64->48)'].widths == (32, 48, 96, 128)
    assert all(a.is_expressible() for a in acts.values())


def test_no_action_empties_a_stage_or_goes_below_min_width():
    sub = Subnet.create((16, 16, 16, 16), [['4d', 'id'], ['4d', 'id'], ['4d', 'id', 'id'],
                                           ['4d', 'id', 'id']])
    assert candidate_actions(sub, uniform_importance()) == {}
    with pytest.raises(ValueError, match='no slimming action'):
        slim(sub, uniform_importance(), 0.001, synthetic_lut().predict, lambda s: 50.0, _params)


def test_smallest_drop_per_ms_wins_not_smallest_drop():
    lut = synthetic_lut()
    imp = uniform_importance()
    imp[3][0] = 0.01  # DR removes stage-3 block 0 (an MB4D at width 128: 2 ms)
    start = full_subnet(num_3d=1)
    acts = candidate_actions(start, imp)
    saved = {k: lut.predict(start) - lut.predict(v) for k, v in acts.items()}
    dr, wr = 'DR(stage 3, block 0)', next(k for k in acts if k.startswith('WR'))
    big, small = sorted((dr, wr), key=saved.get, reverse=True)
    assert saved[small] < 0.9 * saved[big]
    # `big` loses more accuracy than `small`, but less per ms saved (small: 1.1x big's rate)
    drops = {big: 1.0, small: 1.1 * saved[small] / saved[big]}
    assert drops[small] < drops[big]

    def accuracy(sub: Subnet) -> float:
        for k, v in acts.items():
            if sub == v:
                return 80.0 - drops.get(k, 10.0)
        return 80.0 if sub == start else 0.0

    target = lut.predict(start) - 0.5 * saved[small]  # one action is enough
    hist = slim(start, imp, target, lut.predict, accuracy, _params)
    assert [h.action for h in hist] == ['start', big]
    scores = {c.action: c.score for c in hist[1].candidates}
    assert scores[big] == pytest.approx(1.0 / saved[big])
    assert scores[small] == pytest.approx(1.1 / saved[big])


@pytest.mark.parametrize('objective', ['latency', 'mes'])
def test_loop_stops_at_target_with_widths_multiple_of_16(objective):
    lut = synthetic_lut()
    start = full_subnet(num_3d=2)
    full = lut.predict(start)
    imp = [[1.0, 2.0], [3.0, 0.5], [4.0, 1.5, 2.5], [6.0, 7.0, 8.0]]

    def accuracy(sub: Subnet) -> float:  # wider and deeper is better, MB3D helps
        return sum(sub.widths) / 10 + 3 * sum(sub.depths) + 2 * sub.num_vit

    target = 0.5 * full
    hist = slim(start, imp, target, lut.predict, accuracy, _params, objective=objective)
    lats = [h.latency_ms for h in hist]
    assert lats[-1] <= target < lats[-2]
    assert all(a > b for a, b in zip(lats, lats[1:]))
    for h in hist:
        assert all(w % 16 == 0 and w >= 16 for w in h.subnet.widths)
        assert h.subnet.is_expressible() and min(h.subnet.depths) >= 1
        assert h.latency_ms == pytest.approx(lut.predict(h.subnet))
    assert hist[-1].subnet.to_arch()['num_vit'] <= 2


def test_mes_objective_trades_latency_for_size():
    """Two actions with the same accuracy drop: DR saves more ms, WR more parameters.
    The latency objective takes DR, MES takes WR (its MES gain is larger)."""
    start = full_subnet(num_3d=0)
    imp = uniform_importance()
    acts = candidate_actions(start, imp)
    dr = next(k for k in acts if k.startswith('DR'))
    wr = next(k for k in acts if k.startswith('WR'))
    lat = {start: 2.0, acts[dr]: 1.0, acts[wr]: 1.8}
    params = {start: 12.0, acts[dr]: 11.5, acts[wr]: 3.0}
    for k in acts:
        lat.setdefault(acts[k], 1.95)
        params.setdefault(acts[k], 11.9)
    for objective, expected in (('latency', dr), ('mes', wr)):
        hist = slim(start, imp, 1.9, lat.__getitem__,
                    lambda s: 70.0 if s == start else 69.0, params.__getitem__,
                    objective=objective)
        assert hist[1].action == expected, objective


def test_bad_objective_and_widths_are_rejected():
    lut = synthetic_lut()
    with pytest.raises(ValueError, match='objective'):
        slim(full_subnet(), uniform_importance(), 1.0, lut.predict, lambda s: 1.0, _params,
             objective='flops')
    odd = Subnet.create((24, 64, 96, 128), full_subnet().blocks)
    with pytest.raises(ValueError, match='multiples of 16'):
        slim(odd, uniform_importance(), 1.0, lut.predict, lambda s: 1.0, _params)


def test_width_reduction_moves_to_next_stage_when_narrowing_saves_nothing():
    """Stage 1 is least important but its narrower width costs the same in the table
    (a flat spot of a measured LUT): WR goes to the next least important stage."""
    lut = synthetic_lut()
    start = full_subnet(num_3d=0)
    imp = uniform_importance(5.0)
    imp[1] = [0.1, 0.1]  # least important stage
    imp[0] = [0.2, 0.3]  # next least important
    flat = LatencyLUT(entries=dict(lut.entries), meta=dict(lut.meta))
    base = flat.predict(start)
    narrower = Subnet.create((32, 48, 96, 128), start.blocks)
    # raise stage 1's 48-wide blocks so the 64->48 narrowing saves nothing
    flat.entries[('mb4d', 1, 48, 48, 4.0)] += (base - flat.predict(narrower)) / 2 + 0.01
    assert flat.predict(narrower) >= base
    plain = candidate_actions(start, imp)
    assert 'WR(stage 1, 64->48)' in plain  # without latencies: the least important stage
    acts = candidate_actions(start, imp, latency_fn=flat.predict)
    assert 'WR(stage 0, 32->16)' in acts and not any(k.startswith('WR(stage 1') for k in acts)
    assert flat.predict(acts['WR(stage 0, 32->16)']) < base


def test_stop_at_floor_returns_smallest_network():
    sub = Subnet.create((32, 16, 16, 16), [['4d', '4d'], ['4d', 'id'], ['4d', 'id', 'id'],
                                           ['4d', 'id', 'id']])
    lines = []
    hist = slim(sub, uniform_importance(), 0.001, synthetic_lut().predict, lambda s: 50.0,
                _params, stop_at_floor=True, log=lines.append)
    assert len(hist) > 1 and candidate_actions(hist[-1].subnet, uniform_importance()) == {}
    assert any('not reachable' in line for line in lines)


def test_width_cut_that_saves_exactly_nothing_is_not_offered():
    """A flat spot of a measured table: stage 1 at 48 costs exactly what it costs at 64 (a
    gain of 0.0 ms, not a loss). WR must move on to the next least important stage."""
    lut = synthetic_lut()
    start = full_subnet(num_3d=0)
    imp = uniform_importance(5.0)
    imp[1] = [0.1, 0.1]  # least important stage
    imp[0] = [0.2, 0.3]  # next least important

    def latency(sub: Subnet) -> float:
        widths = list(sub.widths)
        if widths[1] == 48:
            widths[1] = 64
        return lut.predict(Subnet.create(widths, sub.blocks))

    narrower = Subnet.create((32, 48, 96, 128), start.blocks)
    assert latency(narrower) == latency(start)
    acts = candidate_actions(start, imp, latency_fn=latency)
    assert [k for k in acts if k.startswith('WR')] == ['WR(stage 0, 32->16)']


def test_mes_candidate_without_latency_gain_is_not_taken():
    """Under MES a depth cut that saves parameters but no time raises MES most; it must not be
    a candidate (a step that does not lower the latency never reaches the target). (A width
    cut without saving is already not offered, see above; a depth cut is not timed there.)"""
    start = full_subnet(num_3d=0)
    imp = uniform_importance()
    acts = candidate_actions(start, imp)
    dr = next(k for k in acts if k.startswith('DR'))
    wr = next(k for k in acts if k.startswith('WR'))
    lat = {start: 2.0, acts[dr]: 2.0, acts[wr]: 1.0}  # DR: same latency ...
    params = {start: 12.0, acts[dr]: 0.5, acts[wr]: 11.5}  # ... but 24x fewer parameters
    assert mes(2.0, 0.5) - mes(2.0, 12.0) > mes(1.0, 11.5) - mes(2.0, 12.0)  # DR gains more MES
    hist = slim(start, imp, 1.5, lambda s: lat.get(s, 1.95),
                lambda s: 70.0 if s == start else 69.0, lambda s: params.get(s, 11.9),
                objective='mes')
    assert [h.action for h in hist] == ['start', wr]
    assert dr not in {c.action for c in hist[1].candidates}
    assert hist[-1].latency_ms == 1.0
