"""Dense-resolution benchmarking: the ``train`` backend (one forward + backward step in train
mode), its rows from tools/benchmark.py for a dense backbone, and the zoo's dense tables built
from small result files (no timing is asserted)."""
import csv
import json
import os
from dataclasses import replace

import pytest
import torch

from mmeff.benchmark.report import save_outputs
from mmeff.benchmark.runner import Row
from mmeff.benchmark.timer import Skip, prepare
from mmeff.benchmark.train_step import step_loss, train_step
from mmeff.testing import load_script

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool(name):
    return load_script(os.path.join(ROOT, 'tools', f'{name}.py'))


def test_train_step_runs_forward_and_backward_in_train_mode(toys):
    backbone = toys.classifier().backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    seen = {'training': None, 'grads': 0}
    backbone.register_forward_pre_hook(lambda m, args: seen.update(training=m.training))
    params = [p for p in backbone.parameters() if p.requires_grad]
    for p in params:
        p.register_hook(lambda g: seen.update(grads=seen['grads'] + 1))
    torch.manual_seed(0)  # the toy has dropout and drop path: the same draws below
    loss = prepare('train', backbone, x)()
    assert seen['training'] is True and seen['grads'] == len(params)  # every weight
    assert all(p.grad is None for p in params)  # cleared for the next step
    torch.manual_seed(0)
    with torch.no_grad():
        outs = backbone.train()(x)  # batch statistics, as in the step
    assert not loss.requires_grad
    assert float(loss) == pytest.approx(sum(float((o ** 2).mean()) for o in outs), rel=1e-5)


def test_train_step_needs_trainable_weights():
    frozen = torch.nn.Conv2d(3, 4, 3).requires_grad_(False)
    with pytest.raises(ValueError, match='trainable'):
        train_step(frozen, torch.randn(1, 3, 8, 8))
    with pytest.raises(Skip, match='requires_grad=False'):  # the benchmark skips the row
        prepare('train', frozen, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match='floating-point'):
        step_loss({'labels': torch.tensor([1])})


def test_benchmark_tool_dense_backbone_train_rows(tmp_path, capsys):
    """A dense backbone (four outputs) on every dense backend; train alone defaults to
    batch 2 (here at a small size: 128x128, one run)."""
    tool = _tool('benchmark')
    common = ['backbone/efficientformerv2_s0', '--runs', '1', '--warmup', '0',
              '--out-dir', str(tmp_path), '--no-progress', '--shape', '128', '128']
    assert tool.main(common + ['--backends', 'train', '--stem', 'train']) == 0
    assert tool.main(common + ['--backends', 'fused', 'onnxruntime', '--stem', 'eval']) == 0
    train = json.loads((tmp_path / 'train.json').read_text())['rows']
    assert [(r['backend'], r['status'], r['batch'], r['input']) for r in train] == \
        [('train', 'ok', 2, '128x128')]
    assert train[0]['runs'] == 1 and train[0]['median_ms'] > 0
    with open(tmp_path / 'eval.csv') as f:
        rows = {r['backend']: r for r in csv.DictReader(f)}
    assert {b: (r['status'], r['batch']) for b, r in rows.items()} == \
        {'fused': ('ok', '1'), 'onnxruntime': ('ok', '1')}
    args = tool.apply_train_defaults(tool.parse_args(['x', '--backends', 'train']))
    assert (args.batch, args.shape) == (2, [512, 512])
    args = tool.apply_train_defaults(tool.parse_args(['x', '--backends', 'eager', 'train']))
    assert (args.batch, args.shape) == (1, None)


def _row(backend, ms, size, batch=1, model='backbone/efficientvit_m0'):
    return Row(model=model, group='EfficientViT backbone', backend=backend, status='ok',
               params_m=2.2, gmacs=0.1, paper_params_m=None, paper_gmacs=None, input=size,
               batch=batch, threads=1, median_ms=ms, samples_ms=[ms * 0.9, ms, ms * 1.1])


def test_zoo_tables_dense_columns_and_official_ratios(tmp_path, capsys):
    eval_rows = [_row(b, ms, size) for size, scale in (('512x512', 1), ('800x1216', 4))
                 for b, ms in (('eager', 40.0 * scale), ('fused', 20.0 * scale),
                               ('onnxruntime', 10.0 * scale))]
    train_rows = [_row('train', 300.0, '512x512', batch=2),
                  replace(_row('train', 500.0, '512x512', batch=2), status='skipped')]
    remeasured = [_row('train', 280.0, '512x512', batch=2)]  # a later file replaces a row
    dense = [save_outputs(eval_rows, {'cpu': 'x'}, str(tmp_path), 'eval').json,
             save_outputs(train_rows, {'cpu': 'x'}, str(tmp_path), 'train').json,
             save_outputs(remeasured, {'cpu': 'x'}, str(tmp_path), 'again').json]
    official = tmp_path / 'official.csv'
    with open(official, 'w', newline='') as f:
        writer = csv.DictWriter(f, ['variant', 'mode', 'input', 'official_ms', 'mmeff_ms'])
        writer.writeheader()
        writer.writerow(dict(variant='efficientvit_m0', mode='train', input='512x512',
                             official_ms=390.0, mmeff_ms=300.0))
    tables = _tool('benchmarks/zoo_tables')
    text = tables.dense_tables(dense, str(official))
    head = next(ln for ln in text.splitlines() if ln.startswith('| model ') and
                'train step' in ln)
    assert 'train step 2x512x512 ms' in head and 'train vs official' in head
    line = next(ln for ln in text.splitlines() if ln.startswith('| efficientvit_m0 '))
    cells = [c.strip() for c in line.split('|')[1:-1]]
    assert cells[1:] == ['40', '20', '10', '160', '80', '40', '280', '1.30x', '–']
    assert '| efficientvit_m1 ' not in text  # no rows: no line
    assert tables.main([dense[0], '--official', str(official)]) == 2  # needs --dense
    assert tables.main([str(tmp_path / 'missing.json')]) == 2
    assert 'cannot read' in capsys.readouterr().err
