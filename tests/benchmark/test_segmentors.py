"""Semantic FPN segmentors in tools/benchmark.py: every variant next to MMSeg's ResNet-50 one.

Tiny input and one timed run: this checks the wiring (models built from the real configs, the
R50 anchor timed in the same session, images/s and the ratio reported, JSON written), not the
speed; the figures come from running the tool at 512x512.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmeff.benchmark.registry import select
from mmeff.benchmark.segmentors import SEGMENTOR_ANCHOR, build_segmentor

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
#: every Semantic FPN config of the repository: semfpn_<variant>_ade20k.py
SEGMENTOR_VARIANTS = sorted(p.name[len('semfpn_'):-len('_ade20k.py')]
                            for p in CONFIGS.glob('semfpn_*_ade20k.py'))


def test_segmentors_selection_covers_every_variant_and_the_anchor():
    models = select(['segmentors'], config_dir=CONFIGS)
    assert len(SEGMENTOR_VARIANTS) == 8
    assert sorted(m.name for m in models if m.name != SEGMENTOR_ANCHOR) == \
        [f'semfpn_{v}' for v in SEGMENTOR_VARIANTS]
    assert SEGMENTOR_ANCHOR in {m.name for m in models}
    assert all(m.input_hw == (512, 512) and m.task == 'segmentor' for m in models)


def test_the_config_directory_is_an_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the package does not look for the repo
    with pytest.raises(ValueError, match='--config-dir'):
        select(['segmentors'])
    assert select(['efficientformer_l1'])[0].name == 'efficientformer_l1'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'benchmark.py'), 'semfpn_l1', '--macs-only',
         '--no-progress', '--out-dir', str(tmp_path)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and '--config-dir' in proc.stderr
    assert [m.name for m in select(['semfpn_l1'], config_dir=CONFIGS)] == ['semfpn_l1']


def test_built_from_the_configs():
    model = build_segmentor('semfpn_v2s0', CONFIGS)
    assert type(model.backbone).__name__ == 'EfficientFormerV2'
    assert list(model.neck.in_channels) == [32, 48, 96, 176]
    assert not model.training
    ref = build_segmentor(SEGMENTOR_ANCHOR, CONFIGS)
    assert type(ref.backbone).__name__ == 'ResNetV1c'
    with pytest.raises(ValueError, match='unknown segmentor'):
        build_segmentor('semfpn_l2', CONFIGS)


def test_benchmark_tool_reports_images_per_second_next_to_r50(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'benchmark.py'), 'semfpn_l1', '--backends',
         'eager', '--threads', '1', '--runs', '1', '--warmup', '0', '--shape', '64', '64',
         '--no-progress', '--out-dir', str(tmp_path)],
        cwd=str(REPO), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / 'benchmark.json').read_text())['rows']
    timed = {r['model']: r for r in rows if r['status'] == 'ok'}
    assert set(timed) == {'semfpn_l1', SEGMENTOR_ANCHOR}  # the anchor was added and timed
    assert timed['semfpn_l1']['session'] == timed[SEGMENTOR_ANCHOR]['session']
    assert all(r['images_per_s'] > 0 and r['input'] == '64x64' for r in timed.values())
    # parameter counts of the real models: R50 Semantic FPN 28.5 M, L1 Semantic FPN 15.6 M
    assert 25 < timed[SEGMENTOR_ANCHOR]['params_m'] < 32
    assert 12 < timed['semfpn_l1']['params_m'] < 20
    table = proc.stdout[proc.stdout.index('segmentor throughput'):]
    assert 'semfpn_l1' in table and 'vs R50' in table and 'x' in table
