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
    # The numbers are those of the model's predictions: recomputed here from the predicted
    # and ground-truth maps (ignore index 255; IoUMetric rounds percentages to 2 decimals).
    expected = _metrics_from_predictions(str(overlay), str(checkpoint))
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert abs(metrics[key] - expected[key]) <= 0.006, (key, metrics, expected)


def _metrics_from_predictions(config: str, checkpoint: str) -> dict:
    """aAcc / mIoU / mAcc in %, written out independently of MMSeg's IoUMetric."""
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    from mmseg.apis import init_model

    from mmeff.checkpoint import safe_globals

    cfg = Config.fromfile(config)
    with safe_globals():  # mmengine's checkpoint metadata under torch's weights_only load
        model = init_model(cfg, checkpoint, device='cpu')
    num_classes = cfg.model.decode_head.num_classes
    intersect, area_pred, area_gt = (np.zeros(num_classes) for _ in range(3))
    correct = total = 0
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            for sample in model.test_step(batch):
                pred = sample.pred_sem_seg.data.squeeze(0).numpy()
                gt = sample.gt_sem_seg.data.squeeze(0).numpy()
                keep = gt != 255
                pred, gt = pred[keep], gt[keep]
                correct, total = correct + int((pred == gt).sum()), total + gt.size
                intersect += np.bincount(gt[pred == gt], minlength=num_classes)[:num_classes]
                area_pred += np.bincount(pred, minlength=num_classes)[:num_classes]
                area_gt += np.bincount(gt, minlength=num_classes)[:num_classes]
    union = area_pred + area_gt - intersect
    with np.errstate(invalid='ignore', divide='ignore'):
        iou, acc = intersect / union, intersect / area_gt
    return dict(aAcc=100 * correct / total, mIoU=100 * np.nanmean(iou),
                mAcc=100 * np.nanmean(acc))
