"""EfficientFormer checkpoints: every layout loads to the same model as timm's weights.

Reference weights are timm's random-init ``efficientformer_l*`` (fixed seed, perturbed so that
BN statistics, layer scales and bias tables all matter). The official and mmpretrain files are
built here by renaming timm's state dict back to their key names (the official renaming is
checked against timm's own ``checkpoint_filter_fn``).
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.models.efficientformer import checkpoint_filter_fn

from mmeff.checkpoint import (CONVERTERS, ArchMismatchError, detect_family, load_pretrained,
                              read_state_dict, rename_keys)
from mmeff.models.backbones.efficientformer.checkpoint import EfficientFormerConverter
from mmeff.models.backbones import EfficientFormer
from mmeff.models.classifiers import efficientformer_classifier
from mmeff.models.layers import resize_offset_table
from mmeff.testing import FULL_LAYER_SCALE, load_script, max_rel_err, randomize_

REPO = Path(__file__).resolve().parents[3]
CONVERTER = EfficientFormerConverter()


def timm_reference(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    return randomize_(model, seed=seed, layer_scale=FULL_LAYER_SCALE).eval()


def timm_to_official(sd):
    """Inverse of timm's checkpoint_filter_fn (the Flat gap is already in timm's indices)."""
    return rename_keys(sd, [
        (r'^stem\.conv1\.', 'patch_embed.0.'), (r'^stem\.norm1\.', 'patch_embed.1.'),
        (r'^stem\.conv2\.', 'patch_embed.3.'), (r'^stem\.norm2\.', 'patch_embed.4.'),
        (r'^stages\.(\d+)\.blocks\.', lambda m: f'network.{2 * int(m.group(1))}.'),
        (r'^stages\.(\d+)\.downsample\.conv\.',
         lambda m: f'network.{2 * int(m.group(1)) - 1}.proj.'),
        (r'^stages\.(\d+)\.downsample\.norm\.',
         lambda m: f'network.{2 * int(m.group(1)) - 1}.norm.'),
        (r'ls([12])\.gamma$', r'layer_scale_\1'),
        (r'^head_dist\.', 'dist_head.'),
    ])


def timm_to_mmpretrain(sd):
    """mmpretrain's ImageClassifier keys (its EfficientFormer backbone, neck, head)."""
    return rename_keys(sd, [
        (r'^stem\.conv([12])\.', lambda m: f'backbone.patch_embed.{int(m.group(1)) - 1}.conv.'),
        (r'^stem\.norm([12])\.', lambda m: f'backbone.patch_embed.{int(m.group(1)) - 1}.bn.'),
        (r'^stages\.0\.blocks\.(\d+)\.', r'backbone.network.0.\1.'),
        (r'^stages\.(\d+)\.downsample\.conv\.', r'backbone.network.\1.0.conv.'),
        (r'^stages\.(\d+)\.downsample\.norm\.', r'backbone.network.\1.0.bn.'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.',
         lambda m: f'backbone.network.{m.group(1)}.{int(m.group(2)) + 1}.'),
        (r'ls([12])\.gamma$', r'ls\1.weight'),
        (r'^norm\.', 'backbone.norm3.'),
        (r'^head\.', 'head.head.'), (r'^head_dist\.', 'head.dist_head.'),
    ])


@pytest.fixture(scope='module')
def l1_reference():
    return timm_reference('efficientformer_l1')


@pytest.fixture(scope='module')
def x224():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def classifier_from(checkpoint, arch='l1'):
    model = efficientformer_classifier(arch).eval()
    report = load_pretrained(model, checkpoint, CONVERTER, prefix='', arch_name=arch)
    return model, report


# ------------------------------------------------------------------------------------- parity
def test_official_renaming_in_this_test_is_exactly_inverted_by_timm(l1_reference):
    sd = l1_reference.state_dict()
    back = checkpoint_filter_fn(timm_to_official(sd), l1_reference)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_l1_logits_match_timm_from_timm_official_and_mmpretrain_files(l1_reference, x224,
                                                                       tmp_path):
    sd = l1_reference.state_dict()
    files = {'timm': sd, 'official': {'model': timm_to_official(sd), 'epoch': 300},
             'mmpretrain': {'state_dict': timm_to_mmpretrain(sd), 'meta': {}}}
    with torch.no_grad():
        expected = l1_reference(x224)
    for layout, content in files.items():
        path = tmp_path / f'{layout}.pth'
        torch.save(content, path)
        model, report = classifier_from(str(path))
        assert report.layout == layout
        assert not report.missing and not report.unexpected, report.summary()
        with torch.no_grad():
            got = model(x224)
        assert max_rel_err(got, expected) < 1e-5, layout


def test_distillation_training_outputs_match_timm(l1_reference, x224):
    model, _ = classifier_from(l1_reference.state_dict())
    reference = timm.create_model('efficientformer_l1')
    reference.load_state_dict(l1_reference.state_dict())
    reference.set_distilled_training(True)
    reference.train()
    model.train()
    with torch.no_grad():  # train mode (batch statistics, both heads), no graph needed
        cls, dist = model(x224)
        ref_cls, ref_dist = reference(x224)
    assert max_rel_err(cls, ref_cls) < 1e-5 and max_rel_err(dist, ref_dist) < 1e-5


@pytest.mark.slow
def test_l3_and_l7_logits_match_timm():
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    for arch in ('l3', 'l7'):
        reference = timm_reference(f'efficientformer_{arch}')
        official = {'model': timm_to_official(reference.state_dict())}
        model, report = classifier_from(official, arch)
        assert report.layout == 'official' and not report.missing
        with torch.no_grad():
            assert max_rel_err(model(x), reference(x)) < 1e-5, arch
        del reference, model


def test_index_buffers_are_never_taken_from_files(l1_reference, x224):
    official = timm_to_official(l1_reference.state_dict())
    idx_keys = [k for k in official if k.endswith('attention_bias_idxs')]
    assert idx_keys
    for key in idx_keys:
        official[key] = torch.zeros_like(official[key])
    model, _ = classifier_from(official)
    with torch.no_grad():
        assert max_rel_err(model(x224), l1_reference(x224)) < 1e-5


# ---------------------------------------------------------------------------- mmeff layouts
def test_backbone_loads_canonical_plain_and_detector_checkpoints(l1_reference, tmp_path):
    classifier, _ = classifier_from(l1_reference.state_dict())
    canonical = classifier.state_dict()
    plain = {k[len('backbone.'):]: v for k, v in canonical.items() if k.startswith('backbone.')}
    trained = randomize_(EfficientFormer('l1'), seed=7,  # a detector's backbone
                         layer_scale=FULL_LAYER_SCALE).eval()
    detector = {**{f'backbone.{k}': v for k, v in trained.state_dict().items()},
                'neck.lateral_convs.0.conv.weight': torch.randn(256, 48, 1, 1),
                'rpn_head.rpn_conv.weight': torch.randn(256, 256, 3, 3)}
    cases = {'canonical': ({'state_dict': canonical}, plain),
             'plain backbone': (plain, plain),
             'detector': ({'state_dict': detector, 'meta': {'epoch': 12}}, trained.state_dict())}
    for name, (content, expected) in cases.items():
        path = tmp_path / 'ckpt.pth'
        torch.save(content, path)
        model = EfficientFormer('l1', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        own = model.state_dict()
        for key, value in own.items():
            if key in expected:
                assert torch.equal(value, expected[key]), (name, key)
            else:  # classification checkpoints have no dense output norms: fresh ones
                assert name != 'detector' and key.startswith('out_norm'), (name, key)
                assert torch.equal(value, torch.ones_like(value) if key.endswith('weight')
                                   else torch.zeros_like(value))
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x), trained(x)))


def test_official_dense_checkpoint_maps_out_norms_and_seg_bias():
    ref = randomize_(timm.create_model('efficientformer_l1'), seed=5, layer_scale=FULL_LAYER_SCALE)
    body = timm_to_official(ref.state_dict())
    for key in [k for k in body if k.endswith('attention_biases')]:
        prefix = key[:-len('attention_biases')]
        body[prefix + 'attention_biases_seg'] = torch.randn(8, 625)
        body[prefix + 'attention_bias_idxs_seg'] = torch.zeros(625, 625, dtype=torch.long)
        body[prefix + 'attention_bias_idxs'] = torch.ones(49, 49, dtype=torch.long)
    for key in ('norm.weight', 'norm.bias', 'head.weight', 'head.bias', 'dist_head.weight',
                'dist_head.bias'):
        body.pop(key)
    for i, c in zip((0, 2, 4, 6), (48, 96, 224, 448)):
        body[f'norm{i}.weight'], body[f'norm{i}.bias'] = torch.rand(c), torch.rand(c)
    detector = {f'backbone.{k}': v for k, v in body.items()}
    detector['neck.fpn_convs.0.conv.weight'] = torch.randn(256, 256, 3, 3)
    assert CONVERTER.detect_layout(detector) == 'official-dense'
    model = EfficientFormer('l1')
    report = model.load_checkpoint(detector)
    assert not report.missing and not report.unexpected, report.summary()
    assert report.resized == ['stages.3.blocks.3.token_mixer.attention_bias.table: '
                              '(8, 625) -> (8, 49)']
    for i, j in enumerate((0, 2, 4, 6)):
        assert torch.equal(getattr(model, f'out_norm{i}').weight, body[f'norm{j}.weight'])
    seg = body['network.6.4.token_mixer.attention_biases_seg']
    torch.testing.assert_close(model.stages[3].blocks[3].token_mixer.attention_bias.table,
                               resize_offset_table(seg, (25, 25), (7, 7)))
    assert torch.equal(model.stages[3].blocks[0].mlp.fc1.bn.running_var,
                       body['network.6.0.mlp.norm1.running_var'])
    at_800 = EfficientFormer('l1', img_size=800)  # a 25x25 table: no resizing
    assert not at_800.load_checkpoint(detector).resized
    assert torch.equal(at_800.stages[3].blocks[3].token_mixer.attention_bias.table, seg)


# ----------------------------------------------------------------------- detection and arch
def test_detect_family_and_guess_arch_for_every_layout(l1_reference):
    sd = l1_reference.state_dict()
    classifier, _ = classifier_from(sd)
    cases = {'timm': sd, 'official': timm_to_official(sd), 'mmpretrain': timm_to_mmpretrain(sd),
             'mmeff': classifier.state_dict()}
    for layout, content in cases.items():
        assert detect_family(content) == ('EfficientFormer', layout)
        assert CONVERTER.guess_arch(CONVERTER.convert(content)[0]) == 'l1'
    l3 = timm.create_model('efficientformer_l3').state_dict()
    assert CONVERTER.guess_arch(CONVERTER.convert(l3)[0]) == 'l3'
    custom = EfficientFormer(dict(widths=[8, 16, 24, 32], depths=[1, 1, 2, 2], num_vit=3))
    assert CONVERTER.guess_arch(CONVERTER.convert(custom.state_dict())[0]) is None
    v2 = timm.create_model('efficientformerv2_s0').state_dict()
    with pytest.raises(ValueError, match='not an EfficientFormer'):
        CONVERTER.detect_layout(v2)
    assert 'EfficientFormer' in CONVERTERS


def test_l3_weights_into_l1_fail_naming_l3():
    l3 = timm.create_model('efficientformer_l3').state_dict()
    with pytest.raises(ArchMismatchError, match=r'looks like EfficientFormer-l3, but the model '
                                                r'is EfficientFormer-l1'):
        EfficientFormer('l1').load_checkpoint(l3)
    with pytest.raises(ArchMismatchError, match='EfficientFormer-l3'):
        classifier_from(l3, 'l1')


def test_custom_arch_with_mb3d_in_stage3_round_trips_through_the_canonical_layout():
    arch = dict(widths=[8, 16, 24, 32], depths=[1, 1, 2, 2], num_vit=3)
    source = EfficientFormer(arch)
    target = EfficientFormer(arch)
    report = target.load_checkpoint({'state_dict': {f'backbone.{k}': v for k, v in
                                                    source.state_dict().items()}})
    assert report.layout == 'mmeff' and not report.missing and not report.unexpected
    with pytest.raises(ValueError, match='only has MB3D blocks in the last stage'):
        CONVERTER.from_canonical(CONVERTER.convert(source.state_dict())[0], 'timm')


# ------------------------------------------------------------------------------------- tool
def run_tool_in_process(argv, capsys, status: int = 0):
    """tools/convert_checkpoint.py's main(), without paying a fresh interpreter's imports;
    returns what it printed (stdout, stderr)."""
    assert load_script(REPO / 'tools' / 'convert_checkpoint.py').main(argv) == status
    return capsys.readouterr()


def test_convert_checkpoint_tool_round_trip(l1_reference, tmp_path, capsys):
    src = tmp_path / 'official.pth'
    torch.save({'model': timm_to_official(l1_reference.state_dict())}, src)
    dst, back = tmp_path / 'mmeff.pth', tmp_path / 'timm.pth'
    tool = [sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py')]
    out = subprocess.run(tool + [str(src), str(dst)], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout  # the real command line, run from elsewhere
    assert 'family: EfficientFormer' in out and 'layout: official' in out and 'arch: l1' in out
    n_official = len(read_state_dict(str(src)))
    assert re.search(rf'keys: {n_official} read, {n_official - 1} canonical \(1 dropped', out)
    saved = torch.load(dst, weights_only=True)
    assert set(saved) == {'state_dict'}
    assert set(saved['state_dict']) == set(efficientformer_classifier('l1').state_dict())

    out = run_tool_in_process([str(dst), str(back), '--to', 'timm', '--family',
                               'EfficientFormer'], capsys).out
    assert 'layout: mmeff' in out
    timm_sd = torch.load(back, weights_only=True)
    reference = timm.create_model('efficientformer_l1')
    reference.load_state_dict(timm_sd)  # strict: every key, including rebuilt index buffers
    original = l1_reference.state_dict()
    assert list(timm_sd) == list(original)
    assert all(torch.equal(timm_sd[k], original[k]) for k in original)
    err = run_tool_in_process([str(dst), str(back), '--to', 'official'], capsys, status=2).err
    assert "error: EfficientFormer can be written as ['mmeff', 'timm']" in err
