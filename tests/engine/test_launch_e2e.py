"""The entry points on real MMSeg / MMDet configs (small ResNet-18 models) and the toy data.

This is where the weights_only allow-list meets real checkpoints: MMSeg/MMDet runners also save
dataset metadata, best-score bookkeeping (numpy scalars) and their schedulers' state.
"""
import pytest
import torch

from mmeff.datasets.toy_data import ADE_CLASSES, COCO_CLASSES, make_toy_data
from mmeff.engine import launch

SEG = f"""
_base_ = ['mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
          'mmseg::_base_/default_runtime.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(data_preprocessor=dict(size=(64, 64)), pretrained=None,
             backbone=dict(depth=18, norm_cfg=norm_cfg),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=16),
             decode_head=dict(in_channels=[16] * 4, channels=16, num_classes=5, norm_cfg=norm_cfg,
                              dropout_ratio=0.0))  # no RNG in the step: resume is exact
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
data_root = 'data/toy/ade/ADEChallengeData2016/'
metainfo = dict(classes={ADE_CLASSES!r})
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=4, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2,
                                     save_best='mIoU'),
                     logger=dict(type='LoggerHook', interval=10),
                     visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
"""

DET = f"""
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
          'mmdet::_base_/default_runtime.py']
model = dict(backbone=dict(depth=18, init_cfg=None),
             neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
             rpn_head=dict(in_channels=32, feat_channels=32),
             roi_head=dict(bbox_roi_extractor=dict(out_channels=32),
                           bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=3),
                           mask_roi_extractor=dict(out_channels=32),
                           mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=3)))
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs')]
data_root = 'data/toy/coco/'
metainfo = dict(classes={COCO_CLASSES!r})
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, batch_sampler=None,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
"""


@pytest.fixture
def toy_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_toy_data(tmp_path / 'data' / 'toy', kinds=['coco', 'ade'], num_train=4, num_val=1,
                  size=(64, 64))
    return tmp_path


def _args(config, work_dir, *extra):
    return [config, '--work-dir', work_dir, *extra, '--cfg-options',
            f'experiment_name={work_dir}']


def _test_args(config, checkpoint):
    return [config, checkpoint, '--work-dir', 'test', '--cfg-options', 'experiment_name=test']


@pytest.mark.slow
@pytest.mark.parametrize('task', ['seg', 'det'])
def test_train_resume_and_test_on_toy_data(toy_workspace, task):
    (toy_workspace / 'cfg.py').write_text(SEG if task == 'seg' else DET)
    runner = launch.train(_args('cfg.py', 'full'))
    if task == 'det':  # mmdet scope, real CocoDataset/CocoMetric on the toy annotations
        metrics = launch.test(_test_args('cfg.py', 'full/epoch_1.pth'))
        assert 'coco/bbox_mAP' in metrics and 'coco/segm_mAP' in metrics
        return
    full = {k: v.clone() for k, v in runner.model.state_dict().items()}
    assert (toy_workspace / 'full/last_checkpoint').read_text().endswith('iter_4.pth')
    assert list(toy_workspace.glob('full/best_mIoU_iter_*.pth'))
    # a real MMSeg checkpoint (dataset_meta, best_score, PolyLR state) resumes exactly
    resumed = launch.train(_args('cfg.py', 'resumed', '--resume', 'full/iter_2.pth'))
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, full[key]), key
    metrics = launch.test(_test_args('cfg.py', 'full/iter_4.pth'))
    assert set(metrics) == {'aAcc', 'mIoU', 'mAcc'}


def test_show_dir_is_routed_per_package(toy_workspace, tiny_config):
    # a real checkpoint: build_test_config verifies it
    torch.save({'state_dict': {'w': torch.zeros(1)}}, toy_workspace / 'w.pth')
    for name, text in (('seg.py', SEG), ('det.py', DET)):
        (toy_workspace / name).write_text(text)
    det = launch.build_test_config(['det.py', 'w.pth', '--show-dir', 'shown'])
    assert det.default_hooks.visualization.draw is True
    assert det.default_hooks.visualization.test_out_dir == 'shown'  # DetVisualizationHook
    seg = launch.build_test_config(['seg.py', 'w.pth', '--show-dir', 'shown'])
    assert seg.default_hooks.visualization.draw is True
    assert seg.visualizer.save_dir == 'shown'  # SegVisualizationHook draws via the visualizer
    with pytest.raises(ValueError, match='visualization hook'):
        launch.build_test_config([tiny_config, 'w.pth', '--show-dir', 'shown'])
