"""Missing datasets fail before anything is built, naming the paths and how to get the data."""
import shlex

import pytest
import torch
from mmengine.config import Config

from mmeff.datasets.toy_data import make_toy_data
from mmeff.engine import launch
from mmeff.engine.data_paths import MissingDataError, find_missing_data

DET_CONFIG = """
_base_ = ['mmdet::_base_/datasets/coco_instance.py', 'mmdet::_base_/default_runtime.py']
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
"""
SEG_CONFIG = """
_base_ = ['mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py']
train_cfg = dict(type='IterBasedTrainLoop', max_iters=10, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
"""
CLS_CONFIG = """
default_scope = 'mmeff'
train_dataloader = dict(dataset=dict(type='ImageNet', data_root='data/imagenet',
                                     ann_file='meta/train.txt', data_prefix='train'))
val_dataloader = dict(dataset=dict(type='ImageNet', data_root='data/imagenet',
                                   ann_file='meta/val.txt', data_prefix='val'))
val_cfg = dict()
"""
CASES = {  # kind: config, text the message must contain, root the toy options point at
    'coco': (DET_CONFIG, ['cocodataset.org', 'data/coco/annotations/instances_{train,val}2017'],
             'data/toy/coco/'),
    'ade': (SEG_CONFIG, ['sceneparsing.csail.mit.edu',
                         'data/ade/ADEChallengeData2016/annotations/{training,validation}'],
            'data/toy/ade/ADEChallengeData2016/'),
    'imagenet': (CLS_CONFIG, ['image-net.org', 'data/imagenet/train/<wnid>/*.JPEG'],
                 'data/toy/imagenet/'),
}


def _suggested_options(message: str) -> list:
    line = message.split('--cfg-options ', 1)[1].splitlines()[0]
    return shlex.split(line)


@pytest.mark.parametrize('kind', list(CASES))
def test_missing_dataset_names_path_and_fix(tmp_path, monkeypatch, kind):
    config, must_contain, toy_root = CASES[kind]
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cfg.py').write_text(config)
    with pytest.raises(MissingDataError) as info:
        launch.build_train_config(['cfg.py'])
    message = str(info.value)
    for text in must_contain + [
            f'python tools/make_toy_data.py --kinds {kind} --out data/toy',
            'train_dataloader.dataset.data_root -> ' + str(tmp_path / 'data')]:
        assert text in message, (text, message)
    assert 'val_dataloader.dataset.data_root' in message  # train mode checks validation too

    # Following the advice literally makes the check pass.
    make_toy_data(tmp_path / 'data' / 'toy', kinds=[kind], num_train=2, num_val=1,
                  size=(48, 48))
    options = _suggested_options(message)
    cfg = launch.build_train_config(['cfg.py', '--cfg-options', *options])
    assert cfg.train_dataloader.dataset.data_root == toy_root
    assert not find_missing_data(cfg, 'train')
    if kind != 'imagenet':  # the stock MMDet/MMSeg datasets now load the toy data
        from mmengine.registry import DATASETS, DefaultScope
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            for split in ('train', 'val'):
                assert len(DATASETS.build(cfg[f'{split}_dataloader'].dataset)) > 0


def test_coco_evaluator_annotation_file_is_checked_and_redirected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cfg.py').write_text(DET_CONFIG)
    torch.save({'state_dict': {'w': torch.zeros(1)}}, tmp_path / 'w.pth')  # checked last
    with pytest.raises(MissingDataError) as info:
        launch.build_test_config(['cfg.py', 'w.pth'])
    message = str(info.value)
    assert 'test_dataloader.dataset.data_root' in message
    assert 'test_evaluator.ann_file -> ' + str(
        tmp_path / 'data/coco/annotations/instances_val2017.json') in message
    options = _suggested_options(message)
    assert 'test_evaluator.ann_file=data/toy/coco/annotations/instances_val2017.json' in options
    make_toy_data(tmp_path / 'data' / 'toy', kinds=['coco'], num_train=1, num_val=1,
                  size=(48, 48))
    cfg = launch.build_test_config(['cfg.py', 'w.pth', '--cfg-options', *options])
    assert cfg.load_from == 'w.pth'


def test_existing_root_with_missing_files_names_each_file(tmp_path):
    make_toy_data(tmp_path, kinds=['coco'], num_train=1, num_val=1, size=(48, 48))
    root = str(tmp_path / 'coco')
    (tmp_path / 'coco' / 'val2017').rename(tmp_path / 'coco' / 'val2017_moved')
    inner = dict(type='CocoDataset', data_root=root, ann_file='annotations/missing.json',
                 data_prefix=dict(img='train2017/'))
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=inner)),
        val_cfg=dict(), val_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
            dict(type='CocoDataset', data_root=root, ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'))]))))
    missing = {key: path for key, path, _ in find_missing_data(cfg, 'train')}
    assert missing == {
        'train_dataloader.dataset.dataset.ann_file': f'{root}/annotations/missing.json',
        'val_dataloader.dataset.datasets.0.data_prefix.img': f'{root}/val2017/'}
    assert find_missing_data(cfg, 'test') == []  # no test loader configured: nothing to check


def test_check_runs_before_the_runner_is_built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cfg.py').write_text(CLS_CONFIG)

    def must_not_build(cfg):
        raise AssertionError('runner built although the data is missing')

    monkeypatch.setattr(launch, 'build_runner', must_not_build)
    with pytest.raises(MissingDataError, match='imagenet'):
        launch.train(['cfg.py'])


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="mode must be 'train', 'val' or 'test', got 'deploy'"):
        find_missing_data(Config(dict(train_dataloader=None)), 'deploy')
