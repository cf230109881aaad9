"""The whole search pipeline on a tiny budget (slow), and its written configs."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmeff.registry import MODELS
from mmeff.search.pipeline import run

CONFIG = Path(__file__).resolve().parents[2] / 'configs/search/supernet_l1_toy.py'


def tiny_config() -> Config:
    cfg = Config.fromfile(str(CONFIG))
    cfg.model['backbone'].update(widths=(16, 32, 32, 48), depths=(1, 1, 2, 2), img_size=32)
    cfg.model['head'].update(in_channels=48, num_classes=4)
    cfg.toy_data = dict(num_classes=4, per_class=20, img_size=32, noise=0.5, seed=0)
    cfg.val_images = 16
    cfg.supernet_train = dict(epochs=1, batch_size=32)
    cfg.lut.update(img_size=32, batch=1, runs=1, warmup=0, copies=1)
    return cfg


@pytest.mark.slow
def test_pipeline_tiny_budget(tmp_path):
    cfg = tiny_config()
    lines = []
    report = run(cfg, target_ratios=[0.6], objective='mes', work_dir=str(tmp_path),
                 log=lines.append)
    (entry,) = report['searches']
    assert entry['lut_ms'] <= entry['target_ms']
    assert all(w % 16 == 0 for w in entry['arch']['widths'])
    assert any(line.startswith('[lut-check]') for line in lines)
    files = entry['files']
    for key in ('arch', 'cls_config', 'maskrcnn_config', 'plot'):
        assert Path(files[key]).is_file(), key
    cls_cfg = Config.fromfile(files['cls_config'])
    model = MODELS.build(cls_cfg.model).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert model.backbone.arch_settings['widths'] == entry['arch']['widths']
    det_cfg = Config.fromfile(files['maskrcnn_config'])
    assert det_cfg.model.neck.in_channels == entry['arch']['widths']
    backbone = MODELS.build(det_cfg.model.backbone).eval()
    assert [o.shape[1] for o in backbone(torch.randn(1, 3, 64, 64))] == entry['arch']['widths']
    # the second run reuses the trained supernet and the measured table
    lines.clear()
    run(cfg, targets_ms=[entry['target_ms']], objective='mes',
        lut_path=str(tmp_path / 'lut.json'),
        work_dir=str(tmp_path), log=lines.append)
    assert any('reusing' in line for line in lines) and any('[lut] loading' in line
                                                            for line in lines)
