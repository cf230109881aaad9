"""tools/benchmarks/efficientvit_attention_train.py: the attention's row form vs the official
NCHW formulation, timed and checked for equal outputs and gradients per stage."""
import os

import pytest

from mmeff.testing import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.usefixtures('one_thread')


def _tool():
    return load_script(os.path.join(ROOT, 'tools', 'benchmarks',
                                    'efficientvit_attention_train.py'))


def test_one_row_per_stage_with_equal_results(capsys):
    assert _tool().main(['--variants', 'm0', '--size', '128', '--runs', '1']) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| m0')]
    cells = [[c.strip() for c in row.strip('|').split('|')] for row in rows]
    # 128x128 input: stride-16/32/64 maps of 8, 4 and 2 pixels; the 8x8 map padded to 2x2
    # windows of 7x7 per image, the smaller ones one window of their own size
    assert [c[1:3] for c in cells] == [['8x8', '8x64x7x7'], ['4x4', '2x128x4x4'],
                                       ['2x2', '2x192x2x2']]
    for c in cells:
        assert float(c[4]) > 0 and float(c[5]) > 0
        assert float(c[7]) < 1e-4  # same output and gradients as the NCHW formulation


def test_unknown_variant_is_an_input_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _tool().main(['--variants', 'm9'])
    assert exc.value.code == 2
    assert "unknown variants ['m9']" in capsys.readouterr().err
