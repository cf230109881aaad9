"""The benchmark machinery: registry, backends, outputs and ratios (no timing is asserted)."""
import csv
import json
import os

import pytest
import torch

from mmeff.benchmark import registry as bench_registry
from mmeff.benchmark.registry import BenchModel, register_bench_model, select
from mmeff.benchmark.report import (aggregate, ratio_rows, ratio_table, results_table,
                                       save_outputs)
from mmeff.benchmark.runner import BenchConfig, Row, plan_sessions, run_benchmark
from mmeff.benchmark.timer import measure
from mmeff.testing import load_script

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def toy_registered(toys):
    """A toy mmeff model and a toy reference registered for one test."""
    added = [register_bench_model(BenchModel('toy_ours', 'Toy', toys.classifier,
                                             input_hw=(96, 96), paper_gmacs=0.01)),
             register_bench_model(BenchModel('timm/toy_ref', 'timm', toys.classifier,
                                             input_hw=(96, 96), counterpart='toy_ours'))]
    yield added
    for m in added:
        bench_registry.BENCH_MODELS.pop(m.name, None)


def test_measure_calls_warmup_plus_runs():
    calls = []
    timing = measure(lambda: calls.append(1), warmup=3, runs=7)
    assert len(calls) == 10 and timing.runs == 7
    assert 0 <= timing.min_ms <= timing.median_ms <= timing.p90_ms


def test_default_registry_has_ours_timm_and_references():
    names = [m.name for m in select(['all'])]
    assert len(names) == 13 + 13 + 3
    assert 'timm/resnet50' in names and 'efficientvit_m5' in names
    assert [m.name for m in select(['refs'])] == ['timm/mobilenetv2_100', 'timm/efficientnet_b0',
                                                  'timm/resnet50']
    assert [m.name for m in select(['EfficientViT'])][0] == 'efficientvit_m0'
    assert select(['resnet50'])[0].name == 'timm/resnet50'
    with pytest.raises(ValueError, match='unknown benchmark model'):
        select(['resnet51'])


def test_run_rows_backends_and_skips(toy_registered):
    config = BenchConfig(backends=('eager', 'fused', 'onnxruntime', 'cuda-fp16'), runs=2,
                         warmup=1, threads=1)
    rows = run_benchmark(toy_registered, config, progress=False)
    by = {(r.model, r.backend): r for r in rows}
    assert len(rows) == 8 and {r.session for r in rows} == {0}  # compared: one session
    for backend in ('eager', 'fused', 'onnxruntime'):
        row = by[('toy_ours', backend)]
        assert row.status == 'ok' and row.runs == 2 and row.input == '96x96'
        assert len(row.samples_ms) == 2 and row.median_ms == pytest.approx(
            sum(row.samples_ms) / 2)
        assert row.images_per_s == pytest.approx(1e3 / row.median_ms)
    assert by[('timm/toy_ref', 'eager')].status == 'ok'
    cuda = by[('toy_ours', 'cuda-fp16')]
    if torch.cuda.is_available():  # pragma: no cover
        assert cuda.status == 'ok'
    else:
        assert cuda.status == 'skipped' and cuda.note == 'no CUDA device on this machine'
    r0 = by[('toy_ours', 'eager')]
    assert r0.params_m > 0 and r0.gmacs > 0 and r0.macs_vs_paper_pct is not None


def test_fused_is_skipped_for_non_mmeff_models():
    model = BenchModel('plain', 'CNN reference', lambda: torch.nn.Conv2d(3, 4, 3),
                       input_hw=(32, 32))
    rows = run_benchmark([model], BenchConfig(backends=('eager', 'fused'), runs=1, warmup=0),
                         progress=False)
    fused = next(r for r in rows if r.backend == 'fused')
    assert fused.status == 'skipped' and 'not an mmeff model' in fused.note


def test_macs_only_has_no_timing(toy_registered):
    rows = run_benchmark(toy_registered[:1], BenchConfig(macs_only=True), progress=False)
    assert len(rows) == 1 and rows[0].status == 'complexity' and rows[0].median_ms is None


def _row(model, group, backend, ms, params=1.0, session=0):
    return Row(model=model, group=group, backend=backend, status='ok', params_m=params,
               gmacs=0.1, paper_params_m=None, paper_gmacs=None, input='224x224', batch=1,
               threads=1, session=session, median_ms=ms, p90_ms=ms * 1.1,
               images_per_s=1e3 / ms, runs=3, samples_ms=[ms * 0.9, ms, ms * 1.1])


def test_sessions_group_what_is_compared():
    chosen = select(['efficientformer_l1', 'efficientvit_m0', 'timm/efficientformer_l1',
                     'timm/resnet50', 'timm/mobilenetv2_100'])
    sessions = [[m.name for m in s] for s in plan_sessions(chosen, 'timm/resnet50')]
    assert sessions == [['efficientformer_l1', 'timm/efficientformer_l1', 'timm/resnet50'],
                        ['efficientvit_m0', 'timm/resnet50'],
                        ['timm/mobilenetv2_100', 'timm/resnet50']]
    assert [[m.name for m in s] for s in plan_sessions(chosen[:1], 'timm/resnet50')] == \
        [['efficientformer_l1']]


def test_ratios_compare_like_with_like_within_a_session():
    rows = [_row('efficientformer_l1', 'EfficientFormer', 'eager', 30.0),
            _row('efficientformer_l1', 'EfficientFormer', 'fused', 20.0),
            _row('efficientformer_l1', 'EfficientFormer', 'onnxruntime', 10.0),
            _row('timm/efficientformer_l1', 'timm', 'eager', 40.0),
            _row('timm/efficientformer_l1', 'timm', 'onnxruntime', 12.5),
            _row('timm/resnet50', 'CNN reference', 'eager', 80.0),
            _row('timm/resnet50', 'CNN reference', 'onnxruntime', 50.0),
            # ResNet-50 measured again in another session, under another load: not used
            _row('timm/resnet50', 'CNN reference', 'eager', 160.0, session=1),
            _row('timm/resnet50', 'CNN reference', 'onnxruntime', 100.0, session=1)]
    (ratios,) = ratio_rows(rows)
    assert ratios['fused_over_eager'] == pytest.approx(2 / 3)
    assert ratios['fused_over_timm_eager'] == pytest.approx(0.5)
    assert ratios['fused_over_resnet50'] == pytest.approx(0.25)
    assert ratios['ort_over_timm_ort'] == pytest.approx(0.8)
    assert ratios['ort_over_resnet50_ort'] == pytest.approx(0.2)
    table = ratio_table(rows)
    assert 'efficientformer_l1' in table and '0.25' in table
    assert '20.00 ( 21.60)' in results_table(rows, ['eager', 'fused'])  # p90 of 18, 20, 22
    pooled = {(r.model, r.backend): r for r in aggregate(rows)}
    r50 = pooled[('timm/resnet50', 'eager')]
    assert r50.runs == 6 and r50.median_ms == pytest.approx((88.0 + 144.0) / 2)


def test_outputs_json_csv_png(tmp_path):
    rows = [_row('efficientformer_l1', 'EfficientFormer', 'fused', 20.0, params=12.3),
            _row('efficientformer_l3', 'EfficientFormer', 'fused', 45.0, params=31.4),
            _row('timm/resnet50', 'CNN reference', 'eager', 80.0, params=25.6)]
    meta = {'cpu': 'test cpu', 'threads': 1, 'batch': 1}
    out = save_outputs(rows, meta, str(tmp_path), 'bench', str(tmp_path / 'plot.png'))
    data = json.loads(open(out.json).read())
    assert data['meta'] == meta and len(data['rows']) == 3
    assert data['rows'][0]['median_ms'] == 20.0
    with open(out.csv) as f:
        assert [r['model'] for r in csv.DictReader(f)][2] == 'timm/resnet50'
    with open(out.png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def _tool(name):
    return load_script(os.path.join(ROOT, 'tools', f'{name}.py'))


def test_benchmark_tool_macs_only(tmp_path, capsys):
    code = _tool('benchmark').main(['efficientvit_m0', 'timm/efficientvit_m0', '--macs-only',
                                    '--out-dir', str(tmp_path), '--no-progress'])
    printed = capsys.readouterr().out
    assert code == 0
    assert 'efficientvit_m0' in printed and 'shared' in printed
    rows = json.loads((tmp_path / 'benchmark.json').read_text())['rows']
    assert rows[0]['gmacs'] == pytest.approx(rows[1]['gmacs'], rel=0.01)
    assert abs(rows[0]['macs_vs_paper_pct']) < 5


def test_benchmark_tool_timed_run_writes_plot(tmp_path, capsys):
    code = _tool('benchmark').main(['efficientvit_m0', 'timm/efficientvit_m0', '--backends',
                                    'eager', 'fused', '--runs', '2', '--warmup', '1',
                                    '--out-dir', str(tmp_path), '--plot',
                                    str(tmp_path / 'p.png'), '--no-progress'])
    printed = capsys.readouterr().out
    assert code == 0 and (tmp_path / 'p.png').exists()
    assert 'speed ratios' in printed and 'fused/timm' in printed


def test_benchmark_tool_bad_arguments(capsys):
    assert _tool('benchmark').main(['nonexistent_model']) == 2
    assert _tool('benchmark').main(['all', '--runs', '0']) == 2


def test_merge_keeps_sessions_apart(tmp_path, capsys):
    first = [_row('efficientformer_l1', 'EfficientFormer', 'fused', 20.0),
             _row('timm/resnet50', 'CNN reference', 'eager', 80.0)]
    second = [_row('efficientvit_m0', 'EfficientViT', 'fused', 10.0),
              _row('timm/resnet50', 'CNN reference', 'eager', 200.0)]
    meta = {'cpu': 'test cpu', 'logical_cores': 2, 'threads': 1, 'batch': 1, 'warmup': 1,
            'runs': 3, 'torch': 'x'}
    a = save_outputs(first, meta, str(tmp_path), 'a').json
    b = save_outputs(second, meta, str(tmp_path), 'b').json
    code = _tool('benchmark').main(['--merge', a, b, '--out-dir', str(tmp_path), '--stem', 'm',
                                    '--plot', str(tmp_path / 'm.png')])
    assert code == 0 and (tmp_path / 'm.png').exists()
    ratios = {r['model']: r for r in json.loads((tmp_path / 'm.json').read_text())['ratios']}
    assert ratios['efficientformer_l1']['fused_over_resnet50'] == pytest.approx(0.25)
    assert ratios['efficientvit_m0']['fused_over_resnet50'] == pytest.approx(0.05)


def test_zoo_tables_from_results(tmp_path):
    rows = [_row('efficientvit_m0', 'EfficientViT', 'eager', 40.0, params=2.35),
            _row('efficientvit_m0', 'EfficientViT', 'fused', 20.0, params=2.35),
            _row('timm/efficientvit_m0', 'timm', 'eager', 50.0, params=2.35),
            _row('timm/resnet50', 'CNN reference', 'eager', 200.0, params=25.6)]
    path = save_outputs(rows, {'cpu': 'x'}, str(tmp_path), 'b').json
    text = _tool('benchmarks/zoo_tables').tables(path)
    line = next(ln for ln in text.splitlines() if ln.startswith('| efficientvit_m0 '))
    cells = [c.strip() for c in line.split('|')[1:-1]]
    assert cells[1] == '2.35' and cells[5:8] == ['40.0', '20.0', '–']
    assert cells[8:10] == ['0.40', '0.10']  # fused / timm eager, fused / ResNet-50
    assert '| resnet50 | 25.60 |' in text
