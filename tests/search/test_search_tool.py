"""tools/search.py and tools/build_latency_lut.py refuse bad input with one message and exit
status 2, before any training."""
import re
from pathlib import Path

import pytest

from mmeff.testing import load_script

ROOT = Path(__file__).resolve().parents[2]
V1_CONFIG = ROOT / 'configs/search/supernet_l1_toy.py'
V2_CONFIG = ROOT / 'configs/search/search_v2_toy.py'


@pytest.fixture(scope='module')
def search_tool():
    return load_script(ROOT / 'tools/search.py')


@pytest.mark.parametrize('argv,match', [
    ([str(V1_CONFIG), '--target-mes', '100'], '--target-mes / --target-params are targets of '
                                              'the EfficientFormerV2 search'),
    ([str(V1_CONFIG), '--family', 'efficientformerv2', '--target-mes', '100'],
     "backbone is type='mmeff.EfficientFormerV2Supernet' .*the config has "
     "'mmeff.EfficientFormerSupernet'"),
    ([str(V2_CONFIG)], 'give a target: --target-mes X, --target-latency MS or --target-params'),
    ([str(V2_CONFIG), '--target-ratio', '0.5'], '--target-ratio is a V1 option'),
    ([str(V1_CONFIG)], r'give --target-latency MS \(or --target-ratio R\)'),
    (['missing_config.py', '--target-mes', '1'], 'missing_config.py'),
])
def test_input_errors_exit_2_with_the_message(search_tool, argv, match, capsys, tmp_path):
    assert search_tool.main(argv + ['--work-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('[search] error: ')
    assert re.search(match, err), err
    assert not any(tmp_path.iterdir())  # refused before writing or training anything


def test_family_follows_the_backbone(search_tool):
    from mmengine.config import Config
    assert search_tool.family_of(Config.fromfile(str(V2_CONFIG))) == 'efficientformerv2'
    assert search_tool.family_of(Config.fromfile(str(V1_CONFIG))) == 'efficientformer'


def test_lut_tool_v2_needs_the_config(capsys, tmp_path):
    tool = load_script(ROOT / 'tools/build_latency_lut.py')
    assert tool.main(['--family', 'efficientformerv2', '--out', str(tmp_path / 'x.csv')]) == 2
    assert '--family efficientformerv2 needs --config' in capsys.readouterr().err
