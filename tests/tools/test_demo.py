"""tools/demo.py runs end to end (a few steps on a tiny toy set) and writes what it promises.

The learning itself (200 steps, AP50 >= 5x) takes ~10 minutes and is run by ``make demo``; this
test checks the machinery: data generation, evaluation before/after, training, the picture, the
summary and the exit status that reports whether the model learned.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

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
    # the exit status is the verdict
    assert (proc.returncode == 0) == summary['learned']
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
