"""docs/dropin.md is true: its config blocks, stock MMDet / MMSeg configs with only the
documented lines changed, pass the pyramid check and all train two steps under DDP (2 processes,
gloo, mmengine's default ``find_unused_parameters=False``) through ``tools/train.py``'s code."""
import json
import math
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
from mmengine.config import Config

from mmeff.engine.pyramid import check_pyramid
from mmeff.testing import finish_group, free_port, start_group

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / 'docs' / 'dropin.md'


def doc_configs() -> dict:
    """{file name: text} of the python blocks of the page that start with '# <name>.py'."""
    blocks = re.findall(r'```python\n(.*?)```', DOC.read_text(), flags=re.S)
    out = {}
    for block in map(textwrap.dedent, blocks):  # blocks inside list items are indented
        first = block.splitlines()[0]
        if first.startswith('# ') and first.endswith('.py'):
            out[first[2:].strip()] = block
    return out


def test_doc_covers_mmdet_and_mmseg_and_each_family():
    configs = doc_configs().values()
    assert {re.search(r"_base_ = '(\w+)::", text).group(1) for text in configs} == \
        {'mmdet', 'mmseg'}
    assert {re.search(r"type='(mmeff\.\w+)'", text).group(1) for text in configs} == \
        {'mmeff.EfficientFormer', 'mmeff.EfficientFormerV2', 'mmeff.EfficientViT'}


#: what a recipe may change in each part of the stock model besides the backbone
ALLOWED = {'neck': {'in_channels', 'start_level'}, 'decode_head': {'in_channels', 'in_index'},
           'auxiliary_head': {'in_channels', 'in_index'}}


def load_recipe(name: str, tmp_path: Path):
    """(recipe config, the stock package config it starts from)."""
    text = doc_configs()[name]
    config = tmp_path / name
    config.write_text(text)
    stock_file = tmp_path / f'stock_{name}'  # the unchanged package config
    stock_file.write_text(re.search(r"_base_ = '[^']+'", text).group(0) + '\n')
    return Config.fromfile(str(config)), Config.fromfile(str(stock_file)), config


@pytest.mark.parametrize('name', sorted(doc_configs()))
def test_dropin_config_changes_only_the_documented_lines(name, tmp_path):
    cfg, stock, _ = load_recipe(name, tmp_path)
    # custom_imports, the backbone, the widths / levels the neck and heads read (+ MMSeg's
    # legacy `pretrained`) differ from the stock config; nothing else
    assert cfg.custom_imports.imports == ['mmeff']
    assert cfg.model.backbone.type.startswith('mmeff.')
    changed = {k for k in cfg.model if cfg.model[k] != stock.model.get(k)}
    assert changed <= {'backbone', 'pretrained', *ALLOWED}, changed
    for part in changed & set(ALLOWED):
        diff = {k for k in cfg.model[part] if cfg.model[part][k] != stock.model[part][k]}
        assert diff <= ALLOWED[part], (part, diff)
    assert {k for k in cfg if k != 'model' and cfg[k] != stock.get(k)} == {'custom_imports'}
    check_pyramid(cfg.model)  # strides and widths agree (raises otherwise)


def _cpu_norms(value):
    """SyncBN -> BN: SyncBatchNorm runs on GPUs only; the test's DDP runs on CPU processes."""
    if isinstance(value, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else _cpu_norms(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_norms(v) for v in value)
    return value


def toy_ddp_config(name: str, tmp_path: Path, roots: dict, write_overlay) -> Path:
    """The recipe on the toy data (4 images, 128 px), 2 steps of 1 image per process, no
    weights, no validation, no checkpoint; the flat config file to train."""
    cfg, _, config = load_recipe(name, tmp_path)
    overlay = write_overlay(config, tmp_path / 'toy', roots[cfg.default_scope], size=128,
                            num_train=4)
    toy = Config.fromfile(str(overlay))
    toy.merge_from_dict({
        'model.backbone.init_cfg': None,  # no weights in the test: random init
        'default_hooks.checkpoint': None,
        'train_cfg.val_interval': 100,
    })
    if cfg.default_scope == 'mmdet':
        toy.merge_from_dict({'train_cfg.max_epochs': 1})  # 4 images, 2 processes x 1 per step
    else:
        toy.merge_from_dict({'train_cfg.max_iters': 2})
    toy.model = _cpu_norms(toy.model.to_dict())
    assert 'find_unused_parameters' not in toy and 'model_wrapper_cfg' not in toy
    flat = tmp_path / 'ddp' / name
    flat.parent.mkdir(exist_ok=True)
    toy.dump(str(flat))
    return flat


@pytest.mark.slow
def test_every_dropin_recipe_trains_two_steps_under_ddp(tmp_path, toy_coco, toy_ade,
                                                        write_overlay):
    """One torchrun launch (2 processes on 127.0.0.1, gloo) trains every recipe of the page in
    turn; an unused parameter would fail the second step ("Expected to have finished reduction
    in the prior iteration")."""
    roots = {'mmdet': toy_coco, 'mmseg': toy_ade}
    names = sorted(doc_configs())
    args = []
    for name in names:
        folder = tmp_path / Path(name).stem
        folder.mkdir()
        args += [str(toy_ddp_config(name, folder, roots, write_overlay)),
                 str(tmp_path / 'work' / name)]
    results = tmp_path / 'results.json'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    proc = start_group([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                        '--master_addr=127.0.0.1', f'--master_port={free_port()}',
                        str(Path(__file__).with_name('dropin_ddp_driver.py')), str(results),
                        *args], env, cwd=str(REPO))
    in_time, out = finish_group(proc, timeout=900)
    assert in_time and proc.returncode == 0, out[-4000:]
    summary = json.loads(results.read_text())
    assert len(summary) == len(names)
    for config, result in summary.items():
        assert result['iter'] == 2 and result['world_size'] == 2, (config, result)
        assert result['find_unused'] is False, config
        assert math.isfinite(result['loss']) and result['loss'] > 0, (config, result)
