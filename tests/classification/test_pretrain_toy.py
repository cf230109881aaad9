"""End to end: pretrain EfficientFormer-L1 with its real config on a toy ImageNet tree, then
initialise a Mask R-CNN backbone from the checkpoint. Run with ``-s`` to see the figures."""
import pytest
import torch
from mmengine.config import Config

import mmeff  # noqa: F401
from mmeff.checkpoint import read_state_dict


@pytest.fixture(scope='module')
def pretrained(toy_imagenet, toy_pretraining, tmp_path_factory, one_thread) -> dict:
    work = str(tmp_path_factory.mktemp('work_plain'))
    return toy_pretraining['train'](toy_pretraining['config'](toy_imagenet, work))


@pytest.mark.slow
def test_pretraining_reaches_well_above_chance(pretrained, toy_imagenet, toy_pretraining):
    chance = 100.0 / toy_imagenet['num_classes']
    toy_pretraining['report'](toy_imagenet, 'no teacher', dict(
        top1=round(pretrained['top1'], 1), chance=chance,
        train_seconds=round(pretrained['seconds'], 1)))
    assert pretrained['top1'] >= 2 * chance
    state = read_state_dict(pretrained['checkpoint'])
    assert state and all(k.startswith(('backbone.', 'head.')) for k in state)
    assert not any(k.startswith('head.head_dist') for k in state)  # no teacher: plain head


@pytest.mark.slow
def test_maskrcnn_backbone_initialised_from_the_pretrained_checkpoint(pretrained, tmp_path):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    checkpoint = pretrained['checkpoint']
    config = tmp_path / 'mask_rcnn_efficientformer_l1_toy.py'
    config.write_text(f"""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='mmeff.EfficientFormer', arch='l1',
                  out_indices=(0, 1, 2, 3),
                  init_cfg=dict(type='Pretrained', checkpoint={checkpoint!r})),
    neck=dict(in_channels=[48, 96, 224, 448]))
""")
    detector = MMDET_MODELS.build(Config.fromfile(str(config)).model)
    detector.init_weights()

    pretrained_backbone = {k[len('backbone.'):]: v for k, v in read_state_dict(checkpoint).items()
                           if k.startswith('backbone.')}
    dense = detector.backbone.state_dict()
    missing = sorted(set(pretrained_backbone) - set(dense))
    assert not missing, missing  # every pretrained backbone tensor has a home
    for key, value in pretrained_backbone.items():
        assert torch.equal(dense[key], value), key
    fresh = sorted(set(dense) - set(pretrained_backbone))
    assert fresh and all(k.startswith('out_norm') for k in fresh), fresh  # dense-only norms
    print(f'\n[Mask R-CNN + EfficientFormer-L1] {len(pretrained_backbone)} backbone tensors equal '
          f'the pretrained ones; initialised fresh (dense-only): '
          f'{sorted({k.split(".")[0] for k in fresh})}')
