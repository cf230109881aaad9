"""ADE20K evaluation: tools/test.py on a Semantic FPN config reports mIoU through MMSeg's
IoUMetric (on the toy ADE set, with a checkpoint written by tools/train.py)."""
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'semfpn_l1_ade20k.py'


def test_test_tool_reports_miou(tmp_path, toy_ade, write_overlay, train_api, known_predictions):
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

    # The trained checkpoint with its classifier biased to one class c: every pixel is
    # predicted c, so the exact metrics follow from the ground truth alone. (After one
    # iteration the model itself scores 0 everywhere, which any broken evaluation matches.)
    seg_maps = sorted((toy_ade / 'annotations' / 'validation').glob('*.png'))[:2]  # num_val=2
    counts = sum(known_predictions['ade_label_counts'](p) for p in seg_maps)
    c, expected = known_predictions['constant_class_metrics'](counts)
    constant = _predicting_only(checkpoint, c, tmp_path / 'constant.pth')
    metrics = launch.test([str(overlay), str(constant), '--work-dir', str(tmp_path / 'test')])
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert 0 < expected['mIoU'] < expected['aAcc'] < 100
    for key in ('aAcc', 'mIoU', 'mAcc'):  # IoUMetric rounds percentages to 2 decimals
        assert abs(metrics[key] - expected[key]) <= 0.006, (key, metrics, expected)


def _predicting_only(checkpoint: Path, label: int, out: Path) -> Path:
    """A copy of ``checkpoint`` whose segmentation classifier always answers ``label``."""
    import torch

    import mmeff  # noqa: F401  (allow-lists the runner types of the checkpoint)

    ckpt = torch.load(checkpoint, map_location='cpu')
    bias = ckpt['state_dict']['decode_head.conv_seg.bias']
    bias.zero_()
    bias[label] = 1e4
    torch.save(ckpt, out)
    return out
