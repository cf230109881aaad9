"""ADE20K evaluation: tools/test.py on a Semantic FPN config reports mIoU through MMSeg's
IoUMetric (on the toy ADE set, with a checkpoint written by tools/train.py)."""
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'semfpn_l1_ade20k.py'


def test_test_tool_reports_miou(tmp_path, toy_ade, write_overlay, train_api):
    from mmengine.config import Config

    from mmeff.engine import launch

    overlay = write_overlay(CONFIG, tmp_path, toy_ade, size=128, num_val=2)
    assert Config.fromfile(str(overlay)).test_evaluator.type == 'IoUMetric'
    work = tmp_path / 'work'
    train_api(overlay, work, {'model.backbone.init_cfg': None, 'train_cfg.max_iters': 1,
                              'train_cfg.val_interval': 100,
                              'default_hooks.checkpoint.interval': 1})
    checkpoint = work / 'iter_1.pth'
    assert checkpoint.is_file()

    metrics = launch.test([str(overlay), str(checkpoint), '--work-dir', str(tmp_path / 'test')])
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    for key in ('aAcc', 'mIoU', 'mAcc'):  # IoUMetric reports percentages
        assert 0.0 <= metrics[key] <= 100.0
