"""tools/gpu_check.py cannot rot: its CPU quick mode runs here (the GPU run needs a GPU machine).

The quick run goes through every section (numerics against CPU fp32, latency, timm side by side,
the dense training step with and without with_cp) on two small variants, with mmcv/mmdet/mmseg
imports blocked, and must write well-formed JSON and markdown with finite, positive numbers.
"""
import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'gpu_check.py'
QUICK_VARIANTS = ['efficientvit_m0', 'efficientformerv2_s0']
PARTS = ['backbone', 'classifier', 'fused', 'timm']


def run_tool(*args, cwd, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def load_tool():
    spec = importlib.util.spec_from_file_location('gpu_check_under_test', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check')
    proc = run_tool('--device', 'cpu', '--quick', '--out', str(out / 'res'), cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / 'res' / 'gpu_check.json').read_text())
    markdown = (out / 'res' / 'gpu_check.md').read_text()
    return proc, result, markdown


@pytest.mark.slow
def test_quick_run_structure(quick_run):
    proc, result, _ = quick_run
    meta = result['meta']
    assert meta['device'] == 'cpu' and meta['quick'] and meta['variants'] == QUICK_VARIANTS
    assert meta['dtypes'] == ['fp32', 'bf16'] and meta['batches'] == [1, 2]
    assert meta['blocked_packages'] == ['mmcv', 'mmdet', 'mmseg']
    assert positive(meta['elapsed_s']) and meta['elapsed_s'] <= meta['budget_s']
    # nothing tried to import mmcv/mmdet/mmseg, nothing failed, nothing skipped
    assert result['blocked_imports'] == [] and result['errors'] == []
    assert result['skipped'] == []
    assert 'done:' in proc.stdout and 'results in' in proc.stdout
    assert set(result['variants']) == set(QUICK_VARIANTS)
    for info in result['variants'].values():
        assert info['weights'].startswith("timm's")  # copied through the converter
        assert set(info['params_m']) == set(PARTS) and all(map(positive,
                                                               info['params_m'].values()))


@pytest.mark.slow
def test_quick_run_numerics(quick_run):
    _, result, _ = quick_run
    rows = result['accuracy']
    assert {(r['variant'], r['part'], r['dtype']) for r in rows} == {
        (v, p, d) for v in QUICK_VARIANTS for p in PARTS for d in ('fp32', 'bf16')}
    for r in rows:
        assert r['finite'] and r['ok'], r
        assert 0 <= r['rel_l2'] <= r['tolerance'] and math.isfinite(r['rel_max'])
        if r['dtype'] == 'fp32':  # the CPU against itself
            assert r['rel_l2'] == 0
        else:
            assert 0 < r['rel_l2'] < 0.05
    for info in result['variants'].values():
        # our classifier reproduces timm's with the same weights; fusing changes nothing
        assert info['ours_vs_timm_cpu_fp32']['rel_l2'] < 1e-5
        assert info['fused_vs_classifier_cpu_fp32']['rel_l2'] < 1e-4


@pytest.mark.slow
def test_quick_run_latency_and_training(quick_run):
    _, result, _ = quick_run
    lat = result['latency']
    assert {(r['variant'], r['part'], r['dtype'], r['batch']) for r in lat} == {
        (v, p, d, b) for v in QUICK_VARIANTS for p in PARTS for d in ('fp32', 'bf16')
        for b in (1, 2)}
    for r in lat:
        for key in ('median_ms', 'p90_ms', 'mean_ms', 'min_ms', 'images_per_s'):
            assert positive(r[key]), (key, r)
        assert r['min_ms'] <= r['median_ms'] <= r['p90_ms'] and r['runs'] >= 2
        assert r['images_per_s'] == pytest.approx(r['batch'] * 1000 / r['median_ms'])

    train = result['train']
    assert [(r['variant'], r['with_cp']) for r in train] == [
        (v, cp) for v in QUICK_VARIANTS for cp in (False, True)]
    for r in train:
        assert r['size'] == [64, 96] and r['amp'] == 'bf16'
        assert r['loss_finite'] and r['grads_finite']
        assert positive(r['median_ms']) and positive(r['saved_mib'])
        assert 'peak_mib' not in r  # CUDA only
    by_key = {(r['variant'], r['with_cp']): r for r in train}
    for v in QUICK_VARIANTS:  # activation checkpointing keeps far fewer tensors for backward
        assert by_key[(v, True)]['saved_mib'] < 0.5 * by_key[(v, False)]['saved_mib']

    # the papers' figures travel with the results
    assert result['paper']['efficientformer_l1'][0]['ms'] == 6.2
    assert result['paper']['efficientvit_m0'][0]['images_per_s'] == 27644


@pytest.mark.slow
def test_quick_run_markdown(quick_run):
    _, result, md = quick_run
    for heading in ('# GPU check', '## Numerics against the same model in fp32 on the CPU',
                    '## Latency', "## Papers' GPU figures", '## Dense backbone training step'):
        assert heading in md
    assert 'QUICK MODE' in md and ' FAIL |' not in md and '## Errors' not in md
    assert md.count('| efficientvit_m0 |') >= 4 + 4 + 2  # numerics, latency, training rows
    assert '| efficientvit_m0 | V100 PyTorch |' in md


def test_unknown_variant_exits_2(tmp_path):
    proc = run_tool('--device', 'cpu', '--quick', '--variants', 'efficientformer_l9',
                    '--out', str(tmp_path / 'res'), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "unknown variant(s) ['efficientformer_l9']" in proc.stderr
    assert 'efficientvit_m5' in proc.stderr  # lists the known ones
    assert not (tmp_path / 'res').exists()


@pytest.mark.parametrize('args, message', [
    (['--batches', '0'], '--batches must be positive'),
    (['--size', '256'], "timm's EfficientFormer/V2/ViT models only take their native 224x224"),
    (['--train-size', '32', '32'], '--train-size must be at least 64'),
])
def test_bad_numbers_exit_2(tmp_path, args, message):
    proc = run_tool('--device', 'cpu', '--quick', *args, '--out', str(tmp_path / 'res'),
                    cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr


def test_cuda_without_cuda_exits_2(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    proc = run_tool('--device', 'cuda', '--quick', '--out', str(tmp_path / 'res'),
                    cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert '--device cuda, but torch sees no CUDA device' in proc.stderr
    assert '--device cpu' in proc.stderr


def test_budget_skips_instead_of_overrunning(tmp_path):
    """A budget that is already spent: every measurement is listed as skipped, files written."""
    proc = run_tool('--device', 'cpu', '--quick', '--variants', 'efficientvit_m0',
                    '--budget-s', '1e-6', '--out', str(tmp_path / 'res'), cwd=tmp_path,
                    timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / 'res' / 'gpu_check.json').read_text())
    assert result['accuracy'] == [] and result['latency'] == [] and result['train'] == []
    assert {(s['section'], s['why']) for s in result['skipped']} == {
        ('inference', 'time budget'), ('train', 'time budget')}
    assert '## Skipped' in (tmp_path / 'res' / 'gpu_check.md').read_text()


def test_blocker_refuses_openmmlab_and_records_who_asked(tmp_path):
    code = ('import sys; sys.path.insert(0, sys.argv[1]); import gpu_check as g; '
            'g.install_blocker()\n'
            'for name in ("mmcv", "mmdet.models", "mmseg"):\n'
            '    try:\n'
            '        __import__(name)\n'
            '    except ModuleNotFoundError as err:\n'
            '        print("refused", name, "blocked by tools/gpu_check.py" in str(err))\n'
            'import mmengine, timm\n'
            'print(len(g.BLOCKER.attempts), g.BLOCKER.attempts[0]["module"])\n')
    proc = subprocess.run([sys.executable, '-c', code, str(REPO / 'tools')], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ['refused mmcv True', 'refused mmdet.models True',
                                        'refused mmseg True', '3 mmcv']


def test_the_tool_has_no_openmmlab_import_statement():
    imported = set()
    for node in ast.walk(ast.parse(TOOL.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split('.')[0])
    assert 'mmeff' in imported and 'torch' in imported
    assert not imported & {'mmcv', 'mmdet', 'mmseg'}


def test_markdown_of_every_section():
    """The markdown writer on a hand-made result with compile rows, skips, errors, blocks."""
    tool = load_tool()
    lat = dict(variant='efficientformer_l1', dtype='fp16', batch=64, size=224, median_ms=8.0,
               images_per_s=8000.0)
    result = dict(
        meta=dict(date='d', device='cuda', gpu='G', cpu='c', torch='t', cuda='13', timm='x',
                  mmengine='y', python='3.12', tf32=False, timing='CUDA events', elapsed_s=1.0,
                  budget_s=420, quick=False, blocked_packages=['mmcv', 'mmdet', 'mmseg'],
                  accuracy_batch=2, size=224, variants=['efficientformer_l1']),
        paper=tool.PAPER, tolerance=tool.TOLERANCE,
        variants={'efficientformer_l1': dict(ours_vs_timm_cpu_fp32=dict(rel_l2=0.0))},
        accuracy=[dict(variant='efficientformer_l1', part='fused', dtype='fp16', rel_l2=0.5,
                       rel_max=0.9, finite=True, ok=False, tolerance=1e-2)],
        latency=[dict(lat, part='classifier'), dict(lat, part='timm', median_ms=10.0),
                 dict(lat, part='fused', median_ms=6.4, images_per_s=10000.0)],
        train=[dict(variant='efficientformer_l1', with_cp=True, size=[800, 1344], batch=2,
                    amp='fp16', median_ms=50.0, images_per_s=40.0, saved_mib=100.0,
                    peak_mib=2000.0, peak_above_weights_mib=1900.0, loss_finite=True,
                    grads_finite=True)],
        compile=[dict(variant='efficientformer_l1', part='classifier', dtype='bf16', batch=64,
                      eager_ms=8.0, compiled_ms=5.0, speedup=1.6, helps=True, compile_s=30.0,
                      vs_eager=dict(rel_l2=1e-3))],
        skipped=[dict(section='compile', what='efficientvit_m5/timm/bf16/b64',
                      why='time budget')],
        errors=[dict(section='latency', what='x/fused/fp16/b1', error='RuntimeError: boom')],
        blocked_imports=[dict(module='mmcv', stack=['mmeff/x.py:1: import mmcv'])])
    md = tool.markdown(result)
    assert '0.50 FAIL' in md
    assert '| efficientformer_l1 | fp16 | 64 | 8.00 | 6.40 | 10.00 | 0.80 | 10000 |' in md
    assert ('| efficientformer_l1 | A100 TensorRT | 64 | 6.20 | 10323 | fused fp16 b64 | 6.40 '
            '| 10000 |') in md
    assert '| efficientformer_l1 | yes | 50.00 | 40.00 | 100.0 | 2000 | 1900 | yes |' in md
    assert '| efficientformer_l1 | classifier | bf16 | 64 | 8.00 | 5.00 | 1.60 | yes |' in md
    assert '- compile efficientvit_m5/timm/bf16/b64: time budget' in md
    assert '- latency x/fused/fp16/b1: RuntimeError: boom' in md
    assert '- mmcv from mmeff/x.py:1: import mmcv' in md
    # strict JSON: no NaN/Infinity tokens
    assert tool.strict_json({'a': [float('nan'), 1.0, {'b': float('inf')}]}) == {
        'a': [None, 1.0, {'b': None}]}
