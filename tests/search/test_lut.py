"""Latency table: prediction, file round trips, import of a table measured elsewhere,
and a tiny real measurement."""
import pytest

from mmeff.search.lut import LatencyLUT, build_lut, stage_resolution, width_grid
from mmeff.search.space import Subnet

from .helpers import full_subnet, synthetic_lut


def test_predict_sums_stem_embeddings_blocks_and_head():
    lut = synthetic_lut()
    sub = Subnet.create((16, 32, 48, 64), [['4d', 'id'], ['4d', '4d'], ['4d', 'id', 'id'],
                                           ['4d', '3d', 'id']])
    expected = (0.5 + 0.16) + (16 * 32 + 32 * 48 + 48 * 64) / 1e4 + 1 + 2 * 2 / 2 + 3 / 3 \
        + 4 / 4 + 8 / 4 + 0.64
    assert lut.predict(sub) == pytest.approx(expected)


def test_missing_entry_names_key_and_fix():
    lut = synthetic_lut(max_widths=(32, 64, 96, 96))
    with pytest.raises(ValueError, match=r"no entry \('stem'.*build_latency_lut"):
        lut.predict(Subnet.create((48, 64, 96, 96), full_subnet().blocks))


@pytest.mark.parametrize('suffix', ['.json', '.csv'])
def test_round_trip(tmp_path, suffix):
    lut = synthetic_lut()
    back = LatencyLUT.load(lut.save(tmp_path / f'lut{suffix}'))
    assert back.entries == pytest.approx(lut.entries)
    assert back.meta == lut.meta
    assert back.predict(full_subnet()) == pytest.approx(lut.predict(full_subnet()))


def test_import_external_csv(tmp_path):
    """An iPhone/CoreML table: meta comments, empty in_width, no mlp_ratio column."""
    rows = ['# device=iPhone 12 NPU', '# img_size=224', 'op,stage,in_width,width,latency_ms',
            'stem,0,3,16,0.05']
    rows += [f'embed,{i},16,16,0.01' for i in (1, 2, 3)]
    rows += [f'mb4d,{i},,16,0.02' for i in range(4)] + ['mb3d,3,,16,0.07', 'head,3,,16,0.003']
    path = tmp_path / 'iphone.csv'
    path.write_text('\n'.join(rows) + '\n')
    lut = LatencyLUT.load(path)
    assert lut.meta == {'device': 'iPhone 12 NPU', 'img_size': 224}
    sub = Subnet.create((16,) * 4, [['4d'], ['4d'], ['4d'], ['4d', '3d']])
    assert lut.predict(sub) == pytest.approx(0.05 + 0.03 + 0.08 + 0.07 + 0.003)


@pytest.mark.parametrize('text, match', [
    ('op,stage,latency_ms\nmb4d,0,1\n', 'lacks columns'),
    ('op,stage,width,latency_ms\nconv,0,16,1\n', 'unknown LUT op'),
    ('op,stage,width,latency_ms\nmb4d,5,16,1\n', 'stage must be 0..3'),
    ('op,stage,width,latency_ms\nmb4d,0,16,fast\n', 'bad LUT row 1'),
])
def test_import_rejects_bad_tables(tmp_path, text, match):
    path = tmp_path / 'bad.csv'
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        LatencyLUT.load(path)


def test_load_missing_file_says_how_to_build(tmp_path):
    with pytest.raises(ValueError, match='build_latency_lut'):
        LatencyLUT.load(tmp_path / 'none.json')


def test_grid_and_resolution():
    assert width_grid(64) == [16, 32, 48, 64]
    with pytest.raises(ValueError, match='multiples'):
        width_grid(40)
    assert [stage_resolution(65, i) for i in range(4)] == [17, 9, 5, 3]


@pytest.mark.parametrize('backend', ['eager', 'fused', 'onnxruntime'])
def test_build_tiny_lut_on_this_cpu(backend):
    lut = build_lut(32, (16, 16, 32, 32), backend=backend, runs=2, warmup=1, num_classes=10)
    ops = {k[0] for k in lut.entries}
    assert ops == {'stem', 'embed', 'mb4d', 'mb3d', 'head'}
    assert lut.widths(3) == [16, 32] and lut.widths(3, 'mb3d') == [16, 32]
    assert all(v > 0 for v in lut.entries.values())
    assert lut.meta['backend'] == backend
    sub = Subnet.create((16, 16, 32, 32), [['4d'], ['4d'], ['4d'], ['3d']])
    assert lut.predict(sub) > 0


def test_v2_block_entries():
    lut = build_lut(32, (16, 16, 16, 16), runs=1, warmup=0, v2=True, v2_ratios=(3.0, 4.0))
    assert lut.get('v2_ffn', 0, None, 16, 3.0) > 0
    assert lut.get('v2_attn', 2, None, 16, 4.0) > 0
    with pytest.raises(ValueError, match='no entry'):
        lut.get('v2_attn', 1, None, 16)


def _nets():
    return [full_subnet(k) for k in range(4)]


def test_calibration_fits_one_factor_per_kind_and_predict_applies_it():
    lut = synthetic_lut()
    nets = _nets()
    parts = [lut.predict_parts(n) for n in nets]
    assert all(sum(p) == pytest.approx(lut.predict_raw(n)) for p, n in zip(parts, nets))
    measured = [2.0 * o + 3.0 * t for o, t in parts]  # MB3D under-predicted more
    assert lut.calibrate(list(zip(nets, measured))) == pytest.approx((2.0, 3.0))
    assert [lut.predict(n) for n in nets] == pytest.approx(measured)
    assert lut.predict_raw(nets[0]) == pytest.approx(sum(parts[0]))


def test_calibration_falls_back_to_one_factor():
    lut = synthetic_lut()
    nets = _nets()
    raw = [lut.predict_raw(n) for n in nets]
    # two points cannot separate the kinds: one factor through the origin
    assert lut.calibrate([(nets[0], 1.5 * raw[0]), (nets[1], 1.5 * raw[1])]) == \
        pytest.approx((1.5, 1.5))
    parts = [lut.predict_parts(n) for n in nets[:3]]
    # a fit that would need a negative MB3D factor is not physical: one factor
    bent = [3.0 * o - 0.5 * t for o, t in parts]
    s1, s2 = lut.calibrate(list(zip(nets[:3], bent)))
    assert s1 == s2 and s1 > 0
    with pytest.raises(ValueError, match='positive'):
        lut.calibrate([(nets[0], -1.0)])


@pytest.mark.parametrize('suffix', ['.json', '.csv'])
def test_calibration_survives_save_and_load(tmp_path, suffix):
    lut = synthetic_lut()
    nets = _nets()
    lut.calibrate([(n, 2.0 * o + 3.0 * t) for n, (o, t) in zip(nets, map(lut.predict_parts,
                                                                         nets))])
    assert lut.predict(full_subnet()) != pytest.approx(lut.predict_raw(full_subnet()))
    back = LatencyLUT.load(lut.save(tmp_path / f'lut{suffix}'))
    assert back.predict(full_subnet()) == pytest.approx(lut.predict(full_subnet()))


def test_cpu_clock_ignores_time_spent_waiting():
    import time

    from mmeff.benchmark.timer import measure
    assert measure(lambda: time.sleep(0.02), runs=2, warmup=0, clock='wall').min_ms >= 19
    assert measure(lambda: time.sleep(0.02), runs=2, warmup=0, clock='cpu').min_ms < 5
    with pytest.raises(ValueError, match='clock'):
        measure(lambda: None, runs=1, warmup=0, clock='gpu')
