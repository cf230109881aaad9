"""tools/search.py --family efficientformerv2 end to end on a tiny budget (slow): the sandwich
supernet trained through the classification module on a toy ImageNet tree, the table of the
space's ops measured and calibrated, the slimming to a parameter target, the written configs;
then, reusing the supernet, an unreachable target and a table lacking an entry exit 2."""
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmeff.registry import MODELS
from mmeff.search.v2_subnet import V2ParamCounter, V2Subnet
from mmeff.testing import load_script

from .helpers import shrink_to_tiny

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs/search/search_v2_toy.py'


def tiny_config(data_root: Path) -> Config:
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.update(img_size=32)
    shrink_to_tiny(cfg, data_root)
    cfg.lut.update(img_size=32, runs=2, warmup=1, copies=1)
    cfg.search.update(calibration_nets=2, seeds=(0, 1, 2), random_tolerance=0.5,
                      train_from_scratch=False)
    return cfg


@pytest.mark.slow
def test_v2_search_tool_end_to_end(tmp_path, capsys):
    cfg = tiny_config(tmp_path / 'toy_imagenet')
    config = tmp_path / 'search_v2_tiny.py'
    cfg.dump(str(config))
    space = MODELS.build(cfg.model['backbone']).search_space
    count = V2ParamCounter(5, 32, cfg.model.backbone.layer_scale_init)
    top, low = (count(V2Subnet.from_arch(a)) for a in (space.max_arch, space.min_arch))
    target = round(low + 0.4 * (top - low), 4)
    work = tmp_path / 'work'
    tool = load_script(ROOT / 'tools/search.py')
    assert tool.main([str(config), '--target-params', str(target), '--work-dir', str(work),
                      '--compare']) == 0
    out = capsys.readouterr().out
    assert '[calibrate] measured = ' in out and 'LUT sum' in out
    report = json.loads((work / 'search_report.json').read_text())
    found = report['searches'][0]
    assert found['params_m'] <= target < top
    assert found['arch'] != space.max_arch and space.validate(found['arch'])
    steps = json.loads(Path(found['files']['arch']).read_text())['steps']
    assert steps[0]['arch'] == V2Subnet.from_arch(space.max_arch).to_arch()
    assert all(b['mes'] > a['mes'] for a, b in zip(steps, steps[1:]))
    assert [s['params_m'] > target for s in steps] == [True] * (len(steps) - 1) + [False]
    rows = found['compare']['rows']
    assert [r['seed'] for r in rows] == [0, 1, 2]
    assert all(abs(r['random_params_m'] - found['params_m']) <= 0.5 * found['params_m']
               for r in rows)
    model = MODELS.build(Config.fromfile(found['files']['cls_config']).model).eval()
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(
        found['params_m'], abs=1e-12)
    assert model(torch.randn(1, 3, 32, 32), mode='tensor').shape == (1, 5)

    lut = work / 'lut_v2.json'
    again = [str(config), '--work-dir', str(work), '--lut', str(lut)]
    assert tool.main(again + ['--target-mes', '1e9']) == 2
    assert 'target MES 1000000000.0 is out of reach' in capsys.readouterr().err
    table = json.loads(lut.read_text())
    table['entries'] = [e for e in table['entries'] if e['op'] != 'v2_head']
    lacking = tmp_path / 'lacking.json'
    lacking.write_text(json.dumps(table))
    assert tool.main([str(config), '--work-dir', str(work), '--lut', str(lacking),
                      '--target-mes', '1']) == 2
    assert 'lacks 2 entries of the search space' in capsys.readouterr().err
