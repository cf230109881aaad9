"""tools/demo.py runs end to end (a few steps on a tiny toy set) and writes what it promises.

The learning itself (200 steps, AP50 >= 5x) takes ~10 minutes and is run by ``make demo``; this
test checks the machinery: data generation, evaluation before/after, training, the picture, the
summary and the exit status that reports whether the model learned.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_demo_smoke(tmp_path):
    work = tmp_path / 'demo'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'demo.py'), '--work-dir', str(work), '--iters', '2',
         '--num-train', '4', '--num-val', '1', '--size', '128', '--threads', '1'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode in (0, 1), proc.stderr[-3000:]

    summary = json.loads((work / 'summary.json').read_text())
    # the verdict follows the rule from the reported numbers, and the exit status is the verdict
    ap50_before, ap50_after = summary['before']['bbox_mAP_50'], summary['after']['bbox_mAP_50']
    assert summary['learned'] == (summary['loss_last'] < summary['loss_first']
                                  and ap50_after >= 5 * ap50_before and ap50_after > 0)
    assert proc.returncode == (0 if summary['learned'] else 1)
    assert summary['iterations'] == 2 and summary['init'].startswith('random')
    for when in ('before', 'after'):
        for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
            assert 0.0 <= summary[when][key] <= 1.0
    assert summary['seconds_per_step'] > 0

    # progress lines while it runs, then the summary block
    assert '[demo] step    1/2' in out and '[demo] step    2/2' in out
    for line in ('loss ', 'bbox mAP ', 'segm mAP ', 's per step', 'picture ', 'verdict '):
        assert line in out, f'missing {line!r} in the summary:\n{out[-2000:]}'

    # the picture: ground truth and prediction side by side, a 128x128 val image enlarged 2x
    png = Path(summary['files']['picture'])
    with Image.open(png) as img:
        assert img.format == 'PNG' and img.size == (512, 256)
    assert Path(summary['files']['checkpoint']).is_file()
    assert (work / 'data' / 'coco' / 'annotations' / 'instances_val2017.json').is_file()


def _demo_module():
    spec = importlib.util.spec_from_file_location('mmeff_tool_demo', REPO / 'tools' / 'demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('losses, before, after, learned', [
    ([2.0, 1.0], 0.01, 0.05, True),    # loss fell, AP50 exactly 5x
    ([2.0, 1.0], 0.01, 0.049, False),  # just under 5x
    ([1.0, 2.0], 0.01, 0.5, False),    # AP50 rose but the loss did not fall
    ([2.0, 1.0], 0.0, 0.0, False),     # nothing detected before or after
    ([2.0, 1.0], 0.0, 0.01, True),     # from nothing to something
])
def test_verdict_rule(losses, before, after, learned):
    """Each side of the rule 'losses fell and bbox AP50 >= 5x its value before (and > 0)'."""
    demo = _demo_module()
    outcome = demo.Outcome(
        args=None, batch_size=1, work_dir=Path('.'), data_root=Path('.'), log_file=Path('.'),
        picture=Path('.'), before={'bbox_mAP_50': before}, after={'bbox_mAP_50': after},
        progress=SimpleNamespace(losses=[{'loss': v} for v in losses]), train_seconds=0.0,
        drawn={}, start=0.0)
    assert outcome.learned is learned
