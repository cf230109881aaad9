"""The written configs: a complete classification config (the cls recipe, trainable by
tools/train.py) and a Mask R-CNN config that builds the full detector."""
import torch
from mmengine.config import Config

from mmeff.registry import MODELS
from mmeff.search.outputs import SEARCH_CONFIG_NAME, write_outputs

from .test_pipeline import CONFIG

ARCH = dict(widths=[16, 32, 48, 64], depths=[1, 1, 2, 1], num_vit=1)


def write(tmp_path):
    Config.fromfile(str(CONFIG)).dump(str(tmp_path / SEARCH_CONFIG_NAME))
    return write_outputs(ARCH, 1.0, [], tmp_path, 'net', 5, 0.1, 'test')


def test_cls_config_is_the_complete_recipe(tmp_path):
    cfg = Config.fromfile(write(tmp_path)['cls_config'])
    assert cfg.default_scope == 'mmeff'
    for key in ('train_dataloader', 'val_dataloader', 'val_evaluator', 'optim_wrapper',
                'param_scheduler', 'train_cfg', 'default_hooks', 'data_preprocessor'):
        assert key in cfg, key
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.model.type == 'mmeff.ImageClassifier'
    assert 'teacher' not in cfg.model  # _delete_ dropped the supernet model
    model = MODELS.build(cfg.model).eval()
    assert model.backbone.arch_settings['widths'] == ARCH['widths']
    assert model(torch.randn(1, 3, 64, 64), mode='tensor').shape == (1, 5)


def test_maskrcnn_config_builds_the_full_detector(tmp_path):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(write(tmp_path)['maskrcnn_config'])
    with DefaultScope.overwrite_default_scope('mmdet'):  # as tools/train.py runs it
        detector = MMDET_MODELS.build(cfg.model).eval()
    assert type(detector).__name__ == 'MaskRCNN'
    assert type(detector.backbone).__name__ == 'EfficientFormer'
    feats = detector.extract_feat(torch.randn(1, 3, 64, 64))
    assert len(feats) == 5 and all(f.shape[1] == 256 for f in feats)
