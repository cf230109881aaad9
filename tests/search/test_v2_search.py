"""EfficientFormerV2's search: space and actions, exact parameter counts, the latency table's
V2 entries, and Alg. 1 (accuracy drop per MES gain) with a fake evaluator."""
import random

import pytest
import torch

from mmeff.models.classifiers import efficientformer_v2_classifier
from mmeff.search.lut import LatencyLUT, build_v2_lut
from mmeff.search.mes import mes
from mmeff.search.slimming import Goal
from mmeff.search.v2_search import slim_v2, slimming_actions, subnets_like
from mmeff.search.v2_space import V2SearchSpace
from mmeff.search.v2_subnet import V2ParamCounter, V2Subnet


SPACE = V2SearchSpace.create(
    dict(widths=(32, 48, 64, 96), depths=(2, 2, 3, 3), mlp_ratios=4, num_attn=1),
    width_choices=((16, 32), (32, 48), (48, 64), (64, 96)), ratio_choices=(2, 3, 4),
    min_depths=(1, 1, 2, 2))
MAX, MIN = V2Subnet.from_arch(SPACE.max_arch), V2Subnet.from_arch(SPACE.min_arch)


def actions(sub):
    return slimming_actions(SPACE, sub)


def synthetic_v2_lut(space=SPACE) -> LatencyLUT:
    """Latency grows with width and ratio; attention blocks cost three FFN blocks."""
    lut = LatencyLUT(meta=dict(img_size=64, backend='synthetic'))
    grids = space.width_choices
    for w in grids[0]:
        lut.add('v2_stem', 0, 3, w, 0.2 + w / 100)
    for i in range(1, 4):
        for w_in in grids[i - 1]:
            for w in grids[i]:
                lut.add('v2_embed', i, w_in, w, w_in * w / 20000)
    for i in range(4):
        for w in grids[i]:
            for r in space.ratio_choices:
                lut.add('v2_ffn', i, None, w, w * r / 400 / (i + 1), r)
                if i >= 2:
                    lut.add('v2_attn', i, None, w, 3 * w * r / 400 / (i + 1), r)
    for w in grids[3]:
        lut.add('v2_head', 3, None, w, 0.001 * w)
    return lut


COUNT = V2ParamCounter(num_classes=5, img_size=64, layer_scale_init=0.1)


def test_param_counter_equals_the_built_classifier():
    archs = [MAX.to_arch(), MIN.to_arch(),
             dict(widths=(32, 32, 64, 96), depths=(1, 2, 3, 2), num_attn=1,
                  mlp_ratios=((3,), (2, 4), (4, 2, 3), (3, 4)))]
    for arch in archs:
        model = efficientformer_v2_classifier(arch, 5, distillation=False, img_size=64,
                                              layer_scale_init=0.1)
        exact = sum(p.numel() for p in model.parameters()) / 1e6
        assert COUNT(V2Subnet.from_arch(arch)) == pytest.approx(exact, abs=1e-12), arch
    # attention-bias tables grow with the grid: 224 counts another number, also exactly
    arch = archs[2]
    model = efficientformer_v2_classifier(arch, 5, distillation=False, img_size=224,
                                          layer_scale_init=None)
    exact = sum(p.numel() for p in model.parameters()) / 1e6
    assert V2ParamCounter(5, 224, None)(V2Subnet.from_arch(arch)) == pytest.approx(exact,
                                                                                   abs=1e-12)
    assert exact != pytest.approx(COUNT(V2Subnet.from_arch(arch)), abs=1e-7)


def test_actions_width_depth_and_every_ratio():
    sub = MAX
    acts = actions(sub)
    assert 'WR(stage 2, 64->48)' in acts and acts['WR(stage 2, 64->48)'].widths[2] == 48
    assert acts['DR(stage 3, block 2)'].depths == (2, 2, 3, 2)
    assert acts['DR(stage 3, block 2)'].mlp_ratios[3] == (4, 4)
    assert acts['ER(stage 1, block 1, 4->3)'].mlp_ratios[1] == (4, 3)
    assert len([k for k in acts if k.startswith('ER')]) == sum(sub.depths)
    assert len(acts) == 4 + 4 + sum(sub.depths)
    assert all(SPACE.validate(a.to_arch()) for a in acts.values())
    assert actions(MIN) == {}
    arch = acts['ER(stage 1, block 1, 4->3)'].to_arch()  # what EfficientFormerV2 builds
    assert V2Subnet.from_arch(arch) == acts['ER(stage 1, block 1, 4->3)']


def _fake_accuracy(cheap: str):
    """80% at the max subnet; every change costs 5 points except those of ``cheap``
    (a width / depth / ratio change of one place) which cost 0.01."""
    top = MAX

    def acc(sub: V2Subnet) -> float:
        drop = 0.0
        for i in range(4):
            if sub.widths[i] != top.widths[i]:
                drop += 0.01 if cheap == f'w{i}' else 5.0
            drop += (top.depths[i] - sub.depths[i]) * 5.0
            for j, r in enumerate(sub.mlp_ratios[i]):
                if r != top.mlp_ratios[i][j]:
                    drop += 0.01 if cheap == f'r{i}{j}' else 5.0
        return 80.0 - drop
    return acc


def test_slimming_picks_the_best_ratio_action():
    lut = synthetic_v2_lut()
    start_mes = mes(lut.predict(MAX), COUNT(MAX))
    hist = slim_v2(SPACE, Goal('mes', start_mes * 1.001, 'mes'), lut.predict,
                   _fake_accuracy('r21'), COUNT)
    assert [h.action for h in hist] == ['start', 'ER(stage 2, block 1, 4->3)']
    scores = {c.action: c.score for c in hist[1].candidates}
    assert len(scores) == len(actions(MAX))  # every action was evaluated
    best = hist[1].candidates[[c.action for c in hist[1].candidates].index(hist[1].action)]
    assert best.score == min(scores.values())
    assert best.score == pytest.approx(0.01 / (hist[1].mes - hist[0].mes))


def test_smallest_drop_per_mes_gain_wins_not_smallest_drop():
    """Two equal accuracy drops: the action that gains more MES is taken."""
    lut = synthetic_v2_lut()
    top = MAX
    acts = actions(top)
    gains = {k: mes(lut.predict(v), COUNT(v)) - mes(lut.predict(top), COUNT(top))
             for k, v in acts.items()}
    a, b = 'ER(stage 0, block 0, 4->3)', 'ER(stage 3, block 0, 4->3)'
    assert gains[b] > gains[a] > 0

    def acc(sub: V2Subnet) -> float:
        return 70.0 if sub in (acts[a], acts[b]) else (80.0 if sub == top else -1e6)
    hist = slim_v2(SPACE, Goal('mes', mes(lut.predict(top), COUNT(top)) + 1e-9, 'mes'),
                   lut.predict, acc, COUNT)
    assert hist[1].action == b


def test_among_free_actions_the_largest_gain_wins():
    """A small validation split scores many actions at no accuracy cost (score 0): the one
    that gains the most MES is taken, not the first in action order."""
    lut = synthetic_v2_lut()
    gains = {k: mes(lut.predict(v), COUNT(v)) - mes(lut.predict(MAX), COUNT(MAX))
             for k, v in actions(MAX).items()}
    hist = slim_v2(SPACE, Goal('mes', mes(lut.predict(MAX), COUNT(MAX)) + 1e-9, 'mes'),
                   lut.predict, lambda s: 80.0, COUNT)
    assert hist[1].action == max(gains, key=gains.get) != next(iter(gains))


@pytest.mark.parametrize('kind', ['mes', 'latency', 'params'])
def test_slimming_stops_at_the_target(kind):
    lut = synthetic_v2_lut()
    top, low = MAX, MIN
    ends = [Goal(kind, 0).value(lut.predict(s), COUNT(s)) for s in (top, low)]
    target = ends[0] + 0.5 * (ends[1] - ends[0])
    goal = Goal(kind, target, 'mes')
    hist = slim_v2(SPACE, goal, lut.predict, _fake_accuracy('w3'), COUNT)
    assert len(hist) > 2
    assert goal.reached(hist[-1].latency_ms, hist[-1].params_m)
    assert not any(goal.reached(h.latency_ms, h.params_m) for h in hist[:-1])
    assert all(h.mes > g.mes for g, h in zip(hist, hist[1:]))  # every step gains MES
    assert all(SPACE.validate(h.subnet.to_arch()) for h in hist)


def test_arch_outside_the_space_is_named():
    lut = synthetic_v2_lut()
    bad = V2Subnet((16, 40, 64, 96), (2, 2, 3, 3), ((4, 4), (4, 4), (4, 4, 4), (4, 4, 4)), 1)
    with pytest.raises(ValueError, match=r'subnet widths\[1\] = 40 is not a width choice of '
                                         r'stage 2: use one of \(32, 48\)'):
        slim_v2(SPACE, Goal('mes', 1e9, 'mes'), lut.predict, lambda s: 0.0, COUNT, start=bad)


@pytest.mark.parametrize('kind,target,match', [
    ('mes', 1e6, r'target MES 1000000.0 is out of reach: the smallest subnet .* has MES '
                 r'[0-9.]+ .*Give --target-mes at most [0-9.]+'),
    ('latency', 1e-4, r'target 0.0001 ms is out of reach.* Give --target-latency at least'),
    ('params', 1e-4, r'target 0.0001 M params is out of reach.* Give --target-params at least'),
])
def test_target_below_the_smallest_subnet_is_refused(kind, target, match):
    lut = synthetic_v2_lut()
    with pytest.raises(ValueError, match=match):
        slim_v2(SPACE, Goal(kind, target, 'mes'), lut.predict, lambda s: 0.0, COUNT)


def test_latency_table_lacking_a_v2_entry_names_it_and_the_fix():
    lut = synthetic_v2_lut()
    del lut.entries[('v2_ffn', 1, 48, 48, 4.0)]
    with pytest.raises(ValueError, match=r"no entry \('v2_ffn', 1, 48, 48, 4.0\) .*"
                                         'build_latency_lut.py --family efficientformerv2'):
        lut.predict(MAX)


def test_calibration_of_v2_networks_keeps_v1_separate():
    lut = synthetic_v2_lut()
    nets = [MAX, MIN, actions(MAX)['DR(stage 3, '
                                                                               'block 2)']]
    other = [lut.predict_parts(n)[0] for n in nets]
    attn = [lut.predict_parts(n)[1] for n in nets]
    lut.calibrate([(n, 1.5 * o + 2.0 * a) for n, o, a in zip(nets, other, attn)])
    assert lut.meta['v2_calibration_scale'] == pytest.approx(1.5)
    assert lut.meta['v2_calibration_scale_attn'] == pytest.approx(2.0)
    assert 'calibration_scale' not in lut.meta and lut.calibrated(V2Subnet)
    assert lut.predict(nets[0]) == pytest.approx(1.5 * other[0] + 2.0 * attn[0])


def test_random_subnets_match_mes_and_params_within_tolerance():
    lut = synthetic_v2_lut()
    ref = V2Subnet.from_arch(SPACE.sample(random.Random(0)))
    m, p = mes(lut.predict(ref), COUNT(ref)), COUNT(ref)
    found = subnets_like(SPACE, 3, m, p, 0.1, lut.predict, COUNT, seed=1)
    assert len(found) == 3 and len(set(found)) == 3
    for sub in found:
        assert abs(COUNT(sub) - p) <= 0.1 * p
        assert abs(mes(lut.predict(sub), COUNT(sub)) - m) <= 0.1 * m


def test_build_v2_lut_covers_the_space_and_predicts_it():
    small = V2SearchSpace.create(dict(widths=(16, 32, 32, 32), depths=(1, 1, 1, 1),
                                      mlp_ratios=4, num_attn=1),
                                 ((16,), (16, 32), (32,), (32,)), ratio_choices=(2, 4))
    torch.manual_seed(0)
    lut = build_v2_lut(32, small.width_choices, small.ratio_choices, runs=1, warmup=0,
                       copies=1, num_classes=5)
    assert {k[0] for k in lut.entries} == {'v2_stem', 'v2_embed', 'v2_ffn', 'v2_attn',
                                           'v2_head'}
    assert len(lut.entries) == 1 + 2 + 2 + 1 + (1 + 2 + 1 + 1) * 2 + 2 * 2 + 1
    for sub in (V2Subnet.from_arch(small.max_arch), V2Subnet.from_arch(small.min_arch)):
        assert lut.predict(sub) > 0


def test_held_out_split_is_disjoint_and_seeded():
    from mmeff.search.v2_pipeline import split_val
    data = dict(val_x=torch.arange(10.0)[:, None], val_y=torch.arange(10))
    search, report = split_val(data, 0.3)
    assert len(search['val_y']) == 7 and len(report['val_y']) == 3
    assert sorted(torch.cat([search['val_y'], report['val_y']]).tolist()) == list(range(10))
    assert torch.equal(search['val_x'][:, 0].long(), search['val_y'])  # pairs kept together
    assert torch.equal(split_val(data, 0.3)[1]['val_y'], report['val_y'])
    assert split_val(data, 0.0)[0] is data
    with pytest.raises(ValueError, match=r'search.held_out must be in \[0, 1\), got 1.0'):
        split_val(data, 1.0)


def test_v2_table_from_a_phone_csv(tmp_path):
    """A table measured elsewhere (the CSV import schema) with the v2_* ops predicts the same
    networks as the table it was written from."""
    lut = synthetic_v2_lut()
    path = lut.save(tmp_path / 'iphone.csv')
    text = path.read_text()
    assert 'v2_attn,2,48,48,4.0,' in text and 'v2_embed,3,48,64,4.0,' in text
    phone = LatencyLUT.load(path)
    for sub in (MAX, MIN):
        assert phone.predict(sub) == pytest.approx(lut.predict(sub))
