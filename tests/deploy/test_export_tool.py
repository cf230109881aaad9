"""tools/export.py from the command line's point of view: exit codes and what it prints."""
import os

import pytest
from mmeff.testing import load_script

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def tool():
    return load_script(os.path.join(ROOT, 'tools', 'export.py'))


def test_backbone_by_name_torchscript(tool, tmp_path, capsys):
    out = tmp_path / 'm0_backbone.pt'
    code = tool.main(['efficientvit_m0', '--part', 'backbone', '--format', 'torchscript',
                      '--shape', '160', '192', '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert out.exists() and 'torchscript (fp32) of the backbone' in printed
    assert 'stage2 [1, 192, 3, 3]' in printed  # stride 64 at 160x192: ceil sizes
    assert 'random weights' in printed and 'parity PASS' in printed


@pytest.mark.parametrize('args, message', [
    (['--format', 'coreml', '--dynamic'], 'CoreML export is static-shape'),
    (['--format', 'onnx', '--dynamic'], 'dynamic H/W is refused'),
    (['--format', 'onnx', '--part', 'segmentor'], '--part segmentor needs a config file'),
])
def test_refusals_exit_2_with_a_message(tool, tmp_path, capsys, args, message):
    code = tool.main(['efficientformer_l1', '--out', str(tmp_path / 'x')] + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not list(tmp_path.iterdir())


def test_unknown_model(tool, capsys):
    assert tool.main(['efficientformer_l2', '--format', 'onnx']) == 2
    assert 'neither a config file nor a model name' in capsys.readouterr().err


def test_default_output_path(tool):
    assert tool.default_out('configs/x/fpn_l1.py', 'auto', (512, 512), 'coreml') == \
        os.path.join('work_dirs', 'export', 'fpn_l1_512x512.mlpackage')
    assert tool.default_out('efficientformer_l1', 'backbone', (224, 224), 'onnx').endswith(
        'efficientformer_l1_backbone_224x224.onnx')


@pytest.mark.parametrize('content, message', [
    (None, 'checkpoint not found'), (b'', 'is an empty (zero-byte) file'),
    (b'model = dict(', 'was never closed')], ids=['missing', 'zero-byte', 'broken-config'])
def test_input_errors_exit_2_without_a_traceback(tool, tmp_path, capsys, content, message):
    """Help: 2 for an input error (these were a traceback and status 1)."""
    path = tmp_path / ('cfg.py' if content and content.startswith(b'model') else 'w.pth')
    if content is not None:
        path.write_bytes(content)
    args = [str(path)] if path.suffix == '.py' else ['efficientvit_m0', str(path)]
    assert tool.main(args + ['--format', 'onnx', '--out', str(tmp_path / 'x.onnx')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('[export] error: ') and message in err
