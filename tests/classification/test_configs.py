"""All 13 ImageNet configs: they load, build, run, and carry the per-variant recipe."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import mmeff  # noqa: F401
from mmeff.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'cls'
#: config -> (backbone type, arch, drop path of the official training, distilled from RegNetY-16GF)
VARIANTS = {
    'efficientformer_l1_in1k.py': ('mmeff.EfficientFormer', 'l1', 0.0, True),
    'efficientformer_l3_in1k.py': ('mmeff.EfficientFormer', 'l3', 0.0, True),
    'efficientformer_l7_in1k.py': ('mmeff.EfficientFormer', 'l7', 0.0, True),
    'efficientformer_v2_s0_in1k.py': ('mmeff.EfficientFormerV2', 's0', 0.0, True),
    'efficientformer_v2_s1_in1k.py': ('mmeff.EfficientFormerV2', 's1', 0.0, True),
    'efficientformer_v2_s2_in1k.py': ('mmeff.EfficientFormerV2', 's2', 0.02, True),
    'efficientformer_v2_l_in1k.py': ('mmeff.EfficientFormerV2', 'l', 0.1, True),
    **{f'efficientvit_m{i}_in1k.py': ('mmeff.EfficientViT', f'm{i}', 0.0, False) for i in range(6)},
}


def test_every_variant_has_a_config():
    assert sorted(p.name for p in CONFIGS.glob('*.py')) == sorted(VARIANTS)


@pytest.mark.parametrize('config', sorted(VARIANTS))
def test_config_builds_and_classifies(config):
    backbone_type, arch, drop_path, distilled = VARIANTS[config]
    cfg = Config.fromfile(CONFIGS / config)
    assert cfg.default_scope == 'mmeff' and cfg.model.type == 'mmeff.ImageClassifier'
    assert cfg.train_dataloader.dataset.data_root == 'data/imagenet'
    assert cfg.train_dataloader.dataset.type == 'mmeff.ImageNet'
    assert cfg.data_preprocessor.mixup.num_classes == cfg.model.head.num_classes == 1000
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == (backbone_type, arch)
    assert backbone.get('drop_path_rate', 0.0) == drop_path
    if distilled:
        assert cfg.model.teacher.name == 'regnety_160'
        # the teacher file is never downloaded: the default path must be given locally
        with pytest.raises(FileNotFoundError, match='not found.*regnety_160-a5fe301d.pth'):
            with torch.device('meta'):
                MODELS.build(cfg.model)
    else:
        assert cfg.model.get('teacher') is None
    cfg.model.teacher = None
    cfg.model.head.num_classes = 7
    with torch.device('meta'):  # shapes only: the head fits the backbone; no memory, no init
        model = MODELS.build(cfg.model).eval()
        logits = model(torch.empty(1, 3, 64, 64))
    assert logits.shape == (1, 7)
    keys = model.state_dict().keys()
    assert all(k.startswith(('backbone.', 'head.')) for k in keys)
