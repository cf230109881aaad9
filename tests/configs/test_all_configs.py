"""Every detection/segmentation config builds, trains one step and runs one inference.

Each config of ``configs/`` (and ``configs/demo/``) is wrapped in a toy overlay (see conftest:
same model, optimizer, scheduler and hooks; toy data at 128 px, one image per split) and run
through ``tools/train.py``'s in-process entry with ``model.backbone.init_cfg=None`` given as a
cfg-option. The one epoch / one iteration ends with the config's own validation (CocoMetric or
IoUMetric) on one image, so one call covers: build, one training step, one inference, metric.
That validation scores a prediction the test knows (see ``_rig_validation``), so the metric the
run reports is checked against its exact value, computed here from the toy files themselves.
"""
import math
from collections import Counter
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config

#: 'val/<metric>' -> (exact value, the metric's rounding)
Expected = Dict[str, Tuple[float, float]]

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'

DENSE_CONFIGS = sorted(p for p in CONFIG_DIR.glob('*.py')) + sorted(
    CONFIG_DIR.glob('demo/*.py'))
# what the papers / the issue fix, per file: (scope, head, backbone type, arch, FPN widths)
EXPECTED = {
    'maskrcnn_l1_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormer', 'l1', [48, 96, 224, 448]),
    'maskrcnn_l3_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormer', 'l3', [64, 128, 320, 512]),
    'maskrcnn_l7_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormer', 'l7', [96, 192, 384, 768]),
    'maskrcnn_v2s0_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormerV2', 's0',
                           [32, 48, 96, 176]),
    'maskrcnn_v2s1_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormerV2', 's1',
                           [32, 48, 120, 224]),
    'maskrcnn_v2s2_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormerV2', 's2',
                           [32, 64, 144, 288]),
    'maskrcnn_v2l_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientFormerV2', 'l', [40, 80, 192, 384]),
    'semfpn_l1_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormer', 'l1',
                         [48, 96, 224, 448]),
    'semfpn_l3_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormer', 'l3',
                         [64, 128, 320, 512]),
    'semfpn_l7_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormer', 'l7',
                         [96, 192, 384, 768]),
    'semfpn_v2s0_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormerV2', 's0',
                           [32, 48, 96, 176]),
    'semfpn_v2s1_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormerV2', 's1',
                           [32, 48, 120, 224]),
    'semfpn_v2s2_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormerV2', 's2',
                           [32, 64, 144, 288]),
    'semfpn_v2l_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientFormerV2', 'l',
                          [40, 80, 192, 384]),
    'maskrcnn_m4_coco': ('mmdet', 'MaskRCNN', 'mmeff.EfficientViT', 'm4', [128, 256, 384]),
    'retinanet_m4_coco': ('mmdet', 'RetinaNet', 'mmeff.EfficientViT', 'm4', [128, 256, 384]),
    'semfpn_m4_ade20k': ('mmseg', 'EncoderDecoder', 'mmeff.EfficientViT', 'm4',
                         [128, 256, 384]),
}


def _ids(paths):
    return [str(p.relative_to(CONFIG_DIR)) for p in paths]


def test_every_expected_config_exists():
    names = {p.stem for p in DENSE_CONFIGS}
    missing = sorted(set(EXPECTED) - names)
    assert not missing, f'configs missing: {missing}'
    assert (CONFIG_DIR / 'maskrcnn_l3_coco.py').is_file()


@pytest.mark.parametrize('path', DENSE_CONFIGS, ids=_ids(DENSE_CONFIGS))
def test_config_recipe(path: Path):
    """Static facts of each config: mmeff import, scope, backbone, widths, recipe numbers."""
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == dict(imports=['mmeff'], allow_failed_imports=False)
    assert cfg.model.backbone.type.startswith('mmeff.')
    if path.parent.name == 'demo':
        from mmeff.datasets import ADE_CLASSES, COCO_CLASSES
        assert cfg.model.backbone.init_cfg is None  # the demos download / need nothing
        toy = COCO_CLASSES if cfg.default_scope == 'mmdet' else ADE_CLASSES
        assert tuple(cfg.train_dataloader.dataset.metainfo['classes']) == tuple(toy)
        return
    init = cfg.model.backbone.init_cfg
    assert init['type'] == 'Pretrained' and init['checkpoint'].startswith('checkpoints/')
    assert cfg.auto_scale_lr.enable is True
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and cfg.optim_wrapper.type == 'OptimWrapper'
    if path.stem in EXPECTED:
        scope, head, backbone, arch, widths = EXPECTED[path.stem]
        assert (cfg.default_scope, cfg.model.type, cfg.model.backbone.type,
                cfg.model.backbone.arch, list(cfg.model.neck.in_channels)) == \
            (scope, head, backbone, arch, widths)
    if cfg.default_scope == 'mmdet':
        # 1x: 12 epochs, steps at 8 and 11, 1333x800, 16 images per step in total
        assert cfg.train_cfg.max_epochs == 12
        steps = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
        assert steps and steps[0].milestones == [8, 11]
        assert cfg.train_dataloader.dataset.pipeline[2].scale == (1333, 800)
        assert cfg.auto_scale_lr.base_batch_size == 16 == 8 * cfg.train_dataloader.batch_size
        if 'v2' in path.stem:
            assert (opt.lr, opt.weight_decay) == (2e-4, 0.05)
        elif 'm4' in path.stem:
            assert (opt.lr, opt.weight_decay) == (1e-4, 0.05)
        else:
            assert (opt.lr, opt.weight_decay) == (2e-4, 1e-4)
    else:
        # Semantic FPN 40k, 512x512 crops, 32 images per step, poly 0.9, AdamW 2e-4 / 1e-4
        assert cfg.train_cfg.max_iters == 40000
        assert cfg.model.data_preprocessor.size == (512, 512)
        poly = [s for s in cfg.param_scheduler if s.type == 'PolyLR']
        assert poly and poly[0].power == 0.9 and poly[0].end == 40000
        assert (opt.lr, opt.weight_decay) == (2e-4, 1e-4)
        assert cfg.auto_scale_lr.base_batch_size == 32 == 8 * cfg.train_dataloader.batch_size
        sizes = [t for t in cfg.test_dataloader.dataset.pipeline
                 if t.type == 'ResizeToMultiple']
        assert sizes and sizes[0].size_divisor == 32


@pytest.mark.parametrize('path', DENSE_CONFIGS, ids=_ids(DENSE_CONFIGS))
def test_config_trains_one_step_and_infers(path: Path, tmp_path, toy_coco, toy_ade,
                                           write_overlay, train_api, known_predictions,
                                           monkeypatch):
    cfg = Config.fromfile(str(path))
    scope = cfg.default_scope
    root = toy_coco if scope == 'mmdet' else toy_ade
    overlay = write_overlay(path, tmp_path, root, size=128)
    by_epoch = 'max_epochs' in cfg.train_cfg
    kinds = ('bbox', 'segm') if cfg.model.type == 'MaskRCNN' else ('bbox',)
    expected = _rig_validation(monkeypatch, scope, kinds, known_predictions)
    runner = train_api(overlay, tmp_path / 'work', {
        'model.backbone.init_cfg': None,
        'train_cfg.max_epochs' if by_epoch else 'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint': None,
    })
    hub = runner.message_hub
    assert runner.iter == 1
    loss = hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
    assert expected, 'the validation did not run'
    for key, (value, tolerance) in expected.items():  # the metrics' rounding
        reported = hub.get_scalar(key).current()
        assert abs(reported - value) <= tolerance, f'{key}: {reported} reported, {value} known'


def _rig_validation(monkeypatch, scope: str, kinds: Tuple[str, ...], known) -> Expected:
    """Make the run's validation score a prediction whose metrics are known exactly; returns the
    dict that the validation fills with the expected ``val/...`` scalars (value, tolerance).

    The real inference still runs on the val image (pipeline, model, rescaling). A segmentor's
    classifier is set to answer its ground truth's most frequent class everywhere (weights 0,
    bias one-hot), which fixes aAcc / mIoU / mAcc; a detector's instances are replaced by the
    image's ground-truth boxes and masks read from the annotation file, which fixes bbox / segm
    mAP. (After one training step the model's own predictions score about 0, which any broken
    evaluation also reports.)
    """
    from mmengine.runner import ValLoop
    expected: Expected = {}
    run = ValLoop.run

    def rigged_run(loop):
        model = loop.runner.model
        real_val_step = model.val_step
        dataset = loop.dataloader.dataset
        assert len(dataset) == 1  # the expectations below are per image

        def val_step(data):
            if scope == 'mmseg':
                _predict_constant_class(model.decode_head.conv_seg, data, expected, known)
                return real_val_step(data)
            outputs = real_val_step(data)
            for sample in outputs:
                sample.pred_instances = _ground_truth_of_the_image(
                    sample, dataset, kinds, expected)
            return outputs
        monkeypatch.setattr(model, 'val_step', val_step)
        return run(loop)
    monkeypatch.setattr(ValLoop, 'run', rigged_run)
    return expected


def _predict_constant_class(conv_seg, data: dict, expected: dict, known: dict) -> None:
    (sample,) = data['data_samples']
    counts = known['ade_label_counts'](sample.seg_map_path)  # from the PNG itself
    c, metrics = known['constant_class_metrics'](counts)
    with torch.no_grad():
        conv_seg.weight.zero_()
        conv_seg.bias.zero_()
        conv_seg.bias[c] = 1.0
    expected.update({f'val/{k}': (v, 0.006) for k, v in metrics.items()})  # % to 2 decimals


def _ground_truth_of_the_image(sample, dataset, kinds: Tuple[str, ...], expected: dict):
    """The annotation file's boxes / masks of the sample's image, each scored 1.

    CocoMetric evaluates every image of its annotation file (the toy val set has two; the
    overlay validates on the first): a category's AP is then the share of COCO's 101 recall
    points up to the recall these exact boxes reach (k of the category's G boxes in the file;
    precision is 1 up to there), 0 for a category not predicted, and the mAP is the mean over
    the categories that have boxes.
    """
    import json

    from mmengine.structures import InstanceData
    from pycocotools import mask as mask_utils
    coco = json.loads(Path(dataset.ann_file).read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    anns = [a for a in coco['annotations'] if a['image_id'] == sample.img_id]
    total = Counter(a['category_id'] for a in coco['annotations'])
    found = Counter(a['category_id'] for a in anns)
    recall_points = np.linspace(0, 1, 101)
    ap = [(recall_points <= found[c] / total[c]).mean() if found[c] else 0.0 for c in total]
    assert 0 < np.mean(ap) < 1 and len(set(found)) >= 2  # not all, not nothing, two categories
    expected.update({f'val/coco/{kind}_mAP': (float(np.mean(ap)), 0.0006) for kind in kinds})
    h, w = sample.ori_shape
    boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a['bbox'] for a in anns)]
    masks = [mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], h, w)))
             for a in anns]
    classes = list(dataset.metainfo['classes'])
    return InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                        scores=torch.ones(len(anns)),
                        labels=torch.tensor([classes.index(names[a['category_id']])
                                             for a in anns]),
                        masks=torch.from_numpy(np.stack(masks)).bool())


def test_missing_pretrained_checkpoint_says_how_to_obtain_it(tmp_path, toy_ade, write_overlay,
                                                              train_api):
    """The configs' ``init_cfg`` names a local file; training without it stops at the start with
    the two ways of getting one."""
    overlay = write_overlay(CONFIG_DIR / 'semfpn_v2s0_ade20k.py', tmp_path, toy_ade)
    missing = tmp_path / 'checkpoints' / 'efficientformerv2_s0.pth'
    with pytest.raises(FileNotFoundError) as err:
        train_api(overlay, tmp_path / 'work',
                  {'model.backbone.init_cfg.checkpoint': str(missing),
                   'train_cfg.max_iters': 1})
    message = str(err.value)
    assert str(missing) in message
    assert 'configs/cls/' in message and 'tools/convert_checkpoint.py' in message
