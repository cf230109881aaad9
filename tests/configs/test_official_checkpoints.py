"""The released dense checkpoints (MMDet 2 / MMSeg 0.x files of snap-research EfficientFormer
V1/V2 and microsoft/Cream EfficientViT: ``backbone.`` + the official keys next to the neck and
heads, under ``state_dict``) load exactly into the configs of ``configs/``, both ways a user
tries: ``load_from=FILE`` (mmengine's ``load_checkpoint``; the backbone converts its part on
load) and ``tools/convert_checkpoint.py FILE OUT`` then ``OUT``. The files are synthetic: random
tensors in the key layouts recorded from the official code (tests/data/official_dense), the
neck and heads in MMDet 3 / MMSeg 1 names, which are MMDet 2 / MMSeg 0.x's (their model zoos
load the 2.x / 0.x files of these models unchanged)."""
import json
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import load_checkpoint

from mmeff.models.loading import load_model
from mmeff.registry import MODELS
from mmeff.testing import load_script

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = json.loads((REPO / 'tests/data/official_dense/official_dense_layouts.json').read_text())
# config -> (recorded official backbone, learned table entries per attention, official neck)
CASES = {
    'maskrcnn_l1_coco': ('efficientformer_l1_det', {625}, None),
    'semfpn_l1_ade20k': ('efficientformer_l1_seg', {256}, None),
    'maskrcnn_v2s0_coco': ('efficientformerv2_s0_det', {625, 2500}, None),
    'semfpn_v2s0_ade20k': ('efficientformerv2_s0_seg', {256, 1024}, None),
    'maskrcnn_m4_coco': ('efficientvit_m4_det', {49}, 'efficientvit_fpn_neck'),
}
_INT_SUFFIXES = ('attention_bias_idxs', 'attention_bias_idxs_seg', 'num_batches_tracked')


def _random(layout, gen):
    """Random tensors for a key layout; BN variances positive, so that the model computes."""
    def value(key, shape):
        if key.endswith(_INT_SUFFIXES):
            return torch.zeros(shape, dtype=torch.long)
        if key.endswith('running_var'):
            return torch.rand(shape, generator=gen) + 0.5
        return torch.randn(shape, generator=gen) * 0.1
    return OrderedDict((key, value(key, shape)) for key, shape in layout)


def official_file(model, case, path: Path) -> OrderedDict:
    """An official dense checkpoint for ``model``'s config: the recorded backbone (and neck)
    layout plus the model's other parts, all random; returns its state dict."""
    backbone, _, neck = CASES[case]
    gen = torch.Generator().manual_seed(0)
    state = _random(LAYOUTS[backbone], gen)
    if neck:
        state.update(_random(LAYOUTS[neck], gen))
    taken = ('backbone.', 'neck.') if neck else ('backbone.',)
    state.update(_random([(k, v.shape) for k, v in model.state_dict().items()
                          if not k.startswith(taken)], gen))
    torch.save({'meta': {'mmdet_version': '2.25.0'}, 'state_dict': state}, path)
    return state


def _tables(state, suffix):
    return [v for k, v in state.items() if k.endswith(suffix)]


def _ours(key: str, own) -> str:
    """The model's name for a neck / head key of the file: the official EfficientViTFPN's
    convs sit inside mmcv ConvModules (``lateral_convs.0.conv.*``), ours are plain convs."""
    return key if key in own else re.sub(r'^neck\.(\w+_convs\.\d+)\.conv\.', r'neck.\1.', key)


def _learned(key: str, dense_tables: bool) -> bool:
    """A backbone tensor the model must hold: not an index buffer or BN counter, and not the
    zero ``attention_biases`` buffer the snap-research dense code keeps next to its tables."""
    unused = dense_tables and key.endswith('.attention_biases')
    return key.startswith('backbone.') and not key.endswith(_INT_SUFFIXES) and not unused


def check_exact(model, official: OrderedDict) -> None:
    """Every tensor of the file is in the model; the learned tables at their own grid."""
    own = model.state_dict()
    for key, value in official.items():
        if not key.startswith('backbone.'):
            assert torch.equal(own[_ours(key, own)], value), key
    dense_tables = bool(_tables(official, 'attention_biases_seg'))
    learned = _tables(official, 'attention_biases_seg') or _tables(official, 'attention_biases')
    tables = _tables(own, 'attention_bias.table')
    assert len(tables) == len(learned) > 0
    assert all(torch.equal(t, s) for t, s in zip(tables, learned))
    in_file = sum(v.numel() for k, v in official.items() if _learned(k, dense_tables))
    in_model = sum(v.numel() for k, v in own.items()
                   if k.startswith('backbone.') and not k.endswith('num_batches_tracked'))
    assert in_model == in_file


def _convert_tool():
    return load_script(REPO / 'tools' / 'convert_checkpoint.py')


@pytest.mark.parametrize('case', sorted(c for c in CASES if c.startswith('maskrcnn')))
def test_official_detector_loads_exactly(case, tmp_path, capsys):
    model = load_model(str(REPO / 'configs' / f'{case}.py'))
    src = tmp_path / 'official.pth'
    official = official_file(model, case, src)
    load_checkpoint(model, str(src), map_location='cpu', strict=True)  # what load_from does
    check_exact(model, official)
    assert {t.shape[1] for t in _tables(model.state_dict(), 'attention_bias.table')} == \
        CASES[case][1]

    dst = tmp_path / 'converted.pth'
    assert _convert_tool().main([str(src), str(dst)]) == 0
    assert 'arch: ' in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)['state_dict']
    loaded = {k: v.clone() for k, v in model.state_dict().items()}
    for value in model.state_dict().values():
        value.zero_()
    result = model.load_state_dict(converted, strict=True)  # every key, neck and heads too
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(model.state_dict()[k], v) for k, v in loaded.items())


@pytest.mark.parametrize('case', sorted(c for c in CASES if c.startswith('semfpn')))
def test_official_segmentor_backbone_keeps_its_tables(case, tmp_path):
    """The ADE20K files learn their tables on the 512 grid (V1 16x16; V2 16x16 and 32x32)."""
    cfg = Config.fromfile(REPO / 'configs' / f'{case}.py')
    cfg.model.backbone.init_cfg = None
    backbone = MODELS.build(cfg.model.backbone)
    state = _random(LAYOUTS[CASES[case][0]], torch.Generator().manual_seed(0))
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': state}, src)
    load_checkpoint(backbone, str(src), map_location='cpu', strict=True,
                    revise_keys=[(r'^backbone\.', '')])
    tables = _tables(backbone.state_dict(), 'attention_bias.table')
    learned = _tables(state, 'attention_biases_seg')
    assert {t.shape[1] for t in tables} == CASES[case][1]
    assert len(tables) == len(learned) and all(map(torch.equal, tables, learned))


def test_file_in_no_known_layout_names_the_closest(tmp_path, capsys):
    state = _random(LAYOUTS['efficientformer_l1_det'], torch.Generator().manual_seed(0))
    state = OrderedDict((k.replace('.mlp.', '.ffn.'), v) for k, v in state.items())
    src = tmp_path / 'renamed.pth'
    torch.save({'state_dict': state}, src)
    assert _convert_tool().main([str(src), str(tmp_path / 'out.pth')]) == 2
    err = capsys.readouterr().err
    assert 'layouts tried: ' in err and 'EfficientViT/official' in err
    assert 'Closest: EfficientFormer/official' in err and 'network.0.0.mlp.fc1.weight' in err
    assert not (tmp_path / 'out.pth').exists()

    model = load_model(str(REPO / 'configs' / 'maskrcnn_l1_coco.py'))
    with pytest.raises(ValueError, match=r'Closest: EfficientFormer/official.*mlp\.fc1'):
        load_checkpoint(model, str(src), map_location='cpu')


def test_tables_of_another_grid_are_resampled_with_a_warning(tmp_path):
    """A backbone left at img_size=224 cannot keep the 25x25 tables of a COCO file: the load
    says so and names the fix instead of silently resampling them."""
    backbone = MODELS.build(dict(type='mmeff.EfficientFormer', arch='l1'))
    state = _random(LAYOUTS['efficientformer_l1_det'], torch.Generator().manual_seed(0))
    src = tmp_path / 'official.pth'
    torch.save({'state_dict': state}, src)
    with pytest.warns(UserWarning, match=r'resampled.*\(8, 625\) -> \(8, 49\).*img_size'):
        load_checkpoint(backbone, str(src), map_location='cpu', strict=True,
                        revise_keys=[(r'^backbone\.', '')])


@pytest.mark.slow
def test_tools_test_evaluates_a_released_detector_file(tmp_path, toy_coco, write_overlay):
    """``tools/test.py CONFIG FILE`` with an official MMDet 2 Mask R-CNN L1 file: the runner's
    load_from fills the whole detector from it and the test loop evaluates (toy COCO)."""
    from mmeff.engine import launch
    config = write_overlay(REPO / 'configs' / 'maskrcnn_l1_coco.py', tmp_path, toy_coco)
    src = tmp_path / 'efficientformer_l1_coco.pth'
    official = official_file(load_model(str(config)), 'maskrcnn_l1_coco', src)
    runner = launch.build_runner(launch.build_test_config(
        [str(config), str(src), '--work-dir', str(tmp_path / 'work')]))
    metrics = runner.test()  # runner types are allow-listed by import mmeff
    assert 'coco/bbox_mAP' in metrics and 'coco/segm_mAP' in metrics
    check_exact(runner.model, official)
