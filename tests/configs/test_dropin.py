"""docs/dropin.md is true: its two config blocks, stock MMDet / MMSeg configs with only the
documented lines changed, train through mmengine's ``Runner.from_cfg``."""
import math
import re
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'dropin.md'


def doc_configs() -> dict:
    """{file name: text} of the python blocks of the page that start with '# <name>.py'."""
    blocks = re.findall(r'```python\n(.*?)```', DOC.read_text(), flags=re.S)
    out = {}
    for block in blocks:
        first = block.splitlines()[0]
        if first.startswith('# ') and first.endswith('.py'):
            out[first[2:].strip()] = block
    return out


def test_doc_has_one_mmdet_and_one_mmseg_config():
    bases = sorted(re.search(r"_base_ = '(\w+)::", text).group(1)
                   for text in doc_configs().values())
    assert bases == ['mmdet', 'mmseg']


@pytest.mark.parametrize('name', sorted(doc_configs()))
def test_dropin_config_trains(name, tmp_path, toy_coco, toy_ade, write_overlay):
    text = doc_configs()[name]
    config = tmp_path / name
    config.write_text(text)
    cfg = Config.fromfile(str(config))
    stock_file = tmp_path / 'stock.py'  # the unchanged package config
    stock_file.write_text(re.search(r"_base_ = '[^']+'", text).group(0) + '\n')
    stock = Config.fromfile(str(stock_file))

    # only custom_imports, the backbone and neck.in_channels (+ MMSeg's legacy `pretrained`)
    # differ from the stock config
    assert cfg.custom_imports.imports == ['mmeff']
    assert cfg.model.backbone.type == 'mmeff.EfficientFormer'
    changed = {k for k in cfg.model if cfg.model[k] != stock.model.get(k)}
    assert changed <= {'backbone', 'neck', 'pretrained'}
    assert {k for k in cfg.model.neck if cfg.model.neck[k] != stock.model.neck[k]} == \
        {'in_channels'}
    assert {k for k in cfg if k != 'model' and cfg[k] != stock.get(k)} == {'custom_imports'}

    scope = cfg.default_scope
    overlay = write_overlay(config, tmp_path / 'toy', toy_coco if scope == 'mmdet' else toy_ade,
                            size=128, num_train=2)
    toy = Config.fromfile(str(overlay))
    toy.merge_from_dict({
        'model.backbone.init_cfg': None,  # no weights in the test: random init
        'default_hooks.checkpoint': None,
        'work_dir': str(tmp_path / 'work'),
    })
    if scope == 'mmdet':
        toy.merge_from_dict({'train_cfg.max_epochs': 1})  # 2 images, 1 per step
    else:
        toy.merge_from_dict({'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2})
    runner = Runner.from_cfg(toy)
    runner.train()

    from mmeff.models.backbones import EfficientFormer
    assert isinstance(runner.model.backbone, EfficientFormer)
    assert runner.iter == 2
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
