"""EfficientViT checkpoint layouts: detection, conversion, backbone loading through init_cfg,
arch guessing, and refusing a q-kernel mismatch (the official downstream M0 bug)."""

import pytest
import timm
import torch

from mmeff.checkpoint import ArchMismatchError, detect_family, load_pretrained
from mmeff.models.backbones.efficientvit.checkpoint import EfficientViTConverter
from mmeff.models.backbones import EfficientViT
from mmeff.models.classifiers import efficientvit_classifier
from mmeff.models.necks import EfficientViTFPN
from mmeff.testing import efficientvit_official_layout, randomize_

CONVERTER = EfficientViTConverter()


def official_state(arch: str, seed: int = 0, kernels=None) -> dict:
    """A state dict in the microsoft/Cream release layout, made from timm's model."""
    torch.manual_seed(seed)
    kw = {} if kernels is None else dict(kernels=kernels)
    model = randomize_(timm.create_model(f'efficientvit_{arch}', pretrained=False, **kw), seed)
    return efficientvit_official_layout(model.state_dict())


# --------------------------------------------------------------------------- detection
def test_layouts_are_detected():
    official = official_state('m0')
    timm_sd = timm.create_model('efficientvit_m0').state_dict()
    canonical = efficientvit_classifier('m0').state_dict()
    plain = EfficientViT('m0').state_dict()
    assert CONVERTER.detect_layout(official) == 'official'
    assert CONVERTER.detect_layout({'backbone.' + k: v for k, v in official.items()}) == 'official'
    assert CONVERTER.detect_layout(timm_sd) == 'timm'
    assert CONVERTER.detect_layout(canonical) == 'mmeff'
    assert CONVERTER.detect_layout(plain) == 'mmeff'
    assert detect_family(timm_sd) == ('EfficientViT', 'timm')
    with pytest.raises(ValueError, match='not an EfficientViT'):
        CONVERTER.detect_layout(timm.create_model('resnet10t').state_dict())


@pytest.mark.parametrize('arch', ['m0', 'm1', 'm2', 'm3', 'm4', 'm5'])
def test_all_layouts_convert_to_the_canonical_keys(arch):
    model = efficientvit_classifier(arch)
    own = model.state_dict()
    expected = {k for k in own if not k.endswith('num_batches_tracked')}
    for sd in (official_state(arch), timm.create_model(f'efficientvit_{arch}').state_dict(), own):
        canonical, _ = CONVERTER.convert(sd)
        got = {k for k in canonical if not k.endswith('num_batches_tracked')}
        assert got == expected
        assert all(canonical[k].shape == own[k].shape for k in expected)
        assert CONVERTER.guess_arch(canonical) == arch


# --------------------------------------------------------------- loading into a backbone
def test_official_release_file_loads_through_init_cfg(tmp_path):
    sd = official_state('m1', seed=3)
    path = tmp_path / 'efficientvit_m1.pth'
    torch.save({'model': sd}, path)
    backbone = EfficientViT('m1', extra_levels=(8,),
                            init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    x = torch.randn(1, 3, 160, 192)
    reference = efficientvit_classifier('m1')
    load_pretrained(reference, sd, CONVERTER, prefix='')
    with torch.no_grad():
        got = backbone.eval()(x)
        expected = reference.backbone.eval()(x)
    assert [o.shape[1] for o in got] == [64, 128, 144, 192]
    torch.testing.assert_close(got[-1], expected[-1], rtol=0, atol=0)
    torch.testing.assert_close(backbone.stem.conv1.conv.weight, sd['patch_embed.0.c.weight'])


def test_official_downstream_detector_checkpoint_loads_and_resizes_tables(tmp_path):
    """mmdet 2.x layout: official keys under 'backbone.', neck/heads beside, 7x7 stage-3
    tables (the downstream code used 7x7 windows everywhere)."""
    sd = official_state('m4', seed=1)
    for key in [k for k in sd if k.startswith('blocks3.') and k.endswith('attention_biases')]:
        sd[key] = torch.randn(4, 49)
    ckpt = {'backbone.' + k: v for k, v in sd.items() if not k.startswith('head.')}
    ckpt['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 128, 1, 1)
    ckpt['bbox_head.retina_cls.weight'] = torch.randn(720, 256, 3, 3)
    path = tmp_path / 'retinanet_efficientvit_m4.pth'
    torch.save({'state_dict': ckpt, 'meta': {'epoch': 12}}, path)
    backbone = EfficientViT('m4')
    report = backbone.load_checkpoint(str(path))
    assert report.layout == 'official'
    assert len(report.resized) == 3 and all('(4, 49) -> (4, 16)' in r for r in report.resized)
    assert sorted({k.split('.')[0] for k in report.dropped}) == ['bbox_head', 'neck']
    assert not report.missing and not report.unexpected


def test_downstream_m0_q_kernels_are_an_error_not_a_silent_skip(tmp_path):
    """The official downstream M0 used q kernels (7, 5, 3, 3); the M0 classification model
    (5, 5, 5, 5). Loading one into the other must fail and say why."""
    sd = official_state('m0', kernels=(7, 5, 3, 3))
    path = tmp_path / 'downstream_m0.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in sd.items()
                               if not k.startswith('head.')}}, path)
    backbone = EfficientViT('m0', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ArchMismatchError) as err:
        backbone.init_weights()
    msg = str(err.value)
    assert 'another EfficientViT architecture' in msg and 'EfficientViT-m0' in msg
    assert 'mixer.attn.dws.0.conv.weight: checkpoint (16, 1, 7, 7) vs model (16, 1, 5, 5)' in msg
    assert 'kernels=(7, 5, 3, 3)' in msg
    # ... and the arch that matches the checkpoint loads it completely
    fixed = EfficientViT(dict(embed_dims=(64, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4),
                              kernels=(7, 5, 3, 3)))
    report = fixed.load_checkpoint(str(path))
    assert not report.missing and not report.unexpected and not report.resized


def test_checkpoint_of_another_arch_fails_naming_it():
    sd = timm.create_model('efficientvit_m4').state_dict()
    with pytest.raises(ArchMismatchError, match='looks like EfficientViT-m4, but the model is '
                                                'EfficientViT-m3'):
        load_pretrained(EfficientViT('m3'), sd, CONVERTER, arch_name='m3')
    with pytest.raises(ArchMismatchError, match='looks like EfficientViT-m4, but the model is '
                                                'EfficientViT-m2'):
        EfficientViT('m2').load_checkpoint(sd)


def test_mmeff_detector_and_plain_backbone_checkpoints(tmp_path):
    torch.manual_seed(0)
    source = EfficientViT('m0', extra_levels=(4, 8))
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    neck = EfficientViTFPN([16, 32, 64, 128, 192], 32, 5)
    detector = {**{'backbone.' + k: v for k, v in source.state_dict().items()},
                **{'neck.' + k: v for k, v in neck.state_dict().items()}}
    for name, obj in (('det', {'state_dict': detector, 'meta': {}}),
                      ('plain', source.state_dict())):
        path = tmp_path / f'{name}.pth'
        torch.save(obj, path)
        target = EfficientViT('m0')
        report = target.load_checkpoint(str(path))
        assert report.layout == 'mmeff' and not report.missing and not report.unexpected
        torch.testing.assert_close(target.stages[2].blocks[2].mixer.attn.attention_bias.table,
                                   source.stages[2].blocks[2].mixer.attn.attention_bias.table)

