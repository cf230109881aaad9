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
    return write_outputs(ARCH, 1.0, [], tmp_path, 'net', 5, 0.1, 'test', img_size=64)


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


def test_v1_cls_config_has_the_searched_size(tmp_path):
    """The V1 classifier is built at the search's img_size: its attention-bias tables, hence
    its parameter count, are those the search counted (at 224 the stage-4 table is larger)."""
    from mmeff.search.pipeline import params_m
    model = MODELS.build(Config.fromfile(write(tmp_path)['cls_config']).model)
    built = sum(p.numel() for n, p in model.named_parameters() if 'teacher' not in n) / 1e6
    assert model.backbone.table_size == (2, 2)  # ceil(64 / 32)
    assert built == params_m(ARCH, 5, 64) != params_m(ARCH, 5, 224)


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


V2_ARCH = dict(widths=[32, 32, 48, 64], depths=[1, 2, 2, 2], num_attn=1,
               mlp_ratios=[[4], [3, 2], [4, 3], [2, 4]])


def test_v2_outputs_build_the_searched_efficientformerv2(tmp_path):
    """The V2 search writes configs of mmeff.EfficientFormerV2 with the searched arch: the
    classifier has exactly the counted parameters (bias tables on the search's grid), the
    Mask R-CNN config builds the detector on it."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    from mmeff.search.slimming import Goal
    from mmeff.search.v2_subnet import V2ParamCounter, V2Subnet
    Config.fromfile(str(CONFIG)).dump(str(tmp_path / SEARCH_CONFIG_NAME))
    files = write_outputs(V2_ARCH, Goal('mes', 500.0, 'mes'), [], tmp_path, 'v2', 5, 0.1,
                          'test', family='efficientformerv2', img_size=64)
    model = MODELS.build(Config.fromfile(files['cls_config']).model).eval()
    assert type(model.backbone).__name__ == 'EfficientFormerV2'
    assert model.backbone.img_size == (64, 64)
    assert model(torch.randn(1, 3, 64, 64), mode='tensor').shape == (1, 5)
    counted = V2ParamCounter(5, 64, 0.1)(V2Subnet.from_arch(V2_ARCH))
    built = sum(p.numel() for n, p in model.named_parameters() if 'teacher' not in n) / 1e6
    assert built == counted
    assert '"target_mes": 500.0' in open(files['arch']).read()
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        detector = MMDET_MODELS.build(Config.fromfile(files['maskrcnn_config']).model).eval()
    assert type(detector.backbone).__name__ == 'EfficientFormerV2'
    assert detector.backbone.widths == tuple(V2_ARCH['widths'])
    assert len(detector.extract_feat(torch.randn(1, 3, 64, 64))) == 5
