"""tools/benchmarks/ort_profile.py: ORT's kernel-time shares and the fp32 MAC floor."""
import os

import pytest

from mmeff.benchmark.registry import BENCH_MODELS, BenchModel, bench_models
from mmeff.testing import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.usefixtures('one_thread')


def _tool():
    return load_script(os.path.join(ROOT, 'tools', 'benchmarks', 'ort_profile.py'))


def test_profile_table_of_a_toy_classifier(toys, monkeypatch, capsys):
    bench_models()
    monkeypatch.setitem(BENCH_MODELS, 'toy/profiled', BenchModel(
        'toy/profiled', 'toy', toys.classifier, input_hw=(64, 64)))
    assert _tool().main(['toy/profiled', '--runs', '2']) == 0
    row = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith('| toy/profiled')][-1]
    cells = [c.strip() for c in row.strip('|').split('|')]
    gmacs, ort_ms, floor_ms = float(cells[1]), float(cells[2]), float(cells[4])
    shares = [float(c.rstrip('%')) for c in cells[5:]]
    assert gmacs > 0 and 0 < floor_ms < ort_ms  # nothing beats the machine's conv rate
    assert sum(shares) == pytest.approx(100, abs=3) and shares[0] > 0  # the toy has convs


def test_bad_arguments_exit_2():
    assert _tool().main(['nonexistent_model']) == 2
    assert _tool().main(['efficientvit_m0', '--runs', '0']) == 2
