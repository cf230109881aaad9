"""tools/benchmarks/segmentor_throughput.py measures our segmentor next to MMSeg's R50 one.

Tiny input and one round: this checks the tool (models built from the real configs, interleaved
timing, ratio to the reference, JSON/CSV written), not the speed; the figures come from running
it at 512x512.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'benchmarks' / 'segmentor_throughput.py'


def test_throughput_tool_runs_and_reports_ratio(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(TOOL), '--variants', 'l1', '--runs', '1', '--warmup', '0',
         '--size', '64', '64', '--threads', '1', '--out-dir', str(tmp_path)],
        cwd=str(REPO), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / 'segmentor_throughput.json').read_text())
    rows = {r['model']: r for r in result['rows']}
    assert list(rows) == ['semfpn_resnet50', 'semfpn_l1']
    assert rows['semfpn_resnet50']['speed_vs_resnet50'] == 1.0
    assert rows['semfpn_l1']['images_per_s'] > 0
    # parameter counts of the real models: R50 Semantic FPN ~28.5 M, L1 Semantic FPN ~15.6 M
    assert 25 < rows['semfpn_resnet50']['params_m'] < 32
    assert 12 < rows['semfpn_l1']['params_m'] < 20
    assert result['meta']['input'] == '1x3x64x64'
    assert 'semfpn_l1' in proc.stdout and 'vs R50' in proc.stdout
    assert (tmp_path / 'segmentor_throughput.csv').read_text().count('\n') == 3


def _tool_module():
    spec = importlib.util.spec_from_file_location('segmentor_throughput', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('argv, message', [
    (['--variants', 'l2'], "unknown variants ['l2']"),
    (['--runs', '0'], 'must be >= 1'),
    (['--threads', '0'], 'must be >= 1'),
])
def test_bad_arguments_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _tool_module().parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
