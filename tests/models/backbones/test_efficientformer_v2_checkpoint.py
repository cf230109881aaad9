"""EfficientFormerV2 checkpoints: official release, timm and mmeff layouts in, official/timm out.

The official layout is built here from a timm state dict by an independent renaming (what the
snap-research code names every tensor), so the converter is checked against a second spelling
of the same facts rather than against itself.
"""
import itertools
import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.checkpoint import ArchMismatchError, detect_family, load_pretrained
from mmeff.models.backbones.efficientformer_v2.checkpoint import EfficientFormerV2Converter
from mmeff.models.backbones import EfficientFormerV2
from mmeff.models.classifiers import efficientformer_v2_classifier
from mmeff.testing import FULL_LAYER_SCALE, load_script, max_rel_err, randomize_

CONVERTER = EfficientFormerV2Converter()


def timm_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(timm.create_model(f'efficientformerv2_{arch}', pretrained=False),
                      layer_scale=FULL_LAYER_SCALE).eval()


# ------------------------------------------------------ timm -> official, written out by hand
def official_bias_index(query_side: int, key_side: int, step: int) -> torch.Tensor:
    """The official construction: offsets numbered in order of first appearance."""
    queries = list(itertools.product(range(0, key_side, step), repeat=2))[:query_side ** 2]
    keys = list(itertools.product(range(key_side), repeat=2))
    numbers, index = {}, []
    for q in queries:
        for k in keys:
            offset = (abs(q[0] - k[0]), abs(q[1] - k[1]))
            index.append(numbers.setdefault(offset, len(numbers)))
    return torch.tensor(index).view(len(queries), len(keys))


BLOCK_PARTS = {
    'mlp.fc1.conv': 'mlp.fc1', 'mlp.fc1.bn': 'mlp.norm1', 'mlp.mid.conv': 'mlp.mid',
    'mlp.mid.bn': 'mlp.mid_norm', 'mlp.fc2.conv': 'mlp.fc2', 'mlp.fc2.bn': 'mlp.norm2',
    'token_mixer.proj.conv': 'token_mixer.proj.1', 'token_mixer.proj.bn': 'token_mixer.proj.2',
    **{f'token_mixer.{n}.{p}': f'token_mixer.{n}.{i}' for n in ('q', 'k', 'v', 'v_local',
                                                                  'stride_conv')
       for i, p in enumerate(('conv', 'bn'))},
}
DOWN_PARTS = {
    'conv.conv': 'proj', 'conv.bn': 'norm', 'attn.q.local': 'attn.q.local.0',
    'attn.q.proj.conv': 'attn.q.proj.0', 'attn.q.proj.bn': 'attn.q.proj.1',
    'attn.proj.conv': 'attn.proj.1', 'attn.proj.bn': 'attn.proj.2',
    **{f'attn.{n}.{p}': f'attn.{n}.{i}' for n in ('k', 'v', 'v_local')
       for i, p in enumerate(('conv', 'bn'))},
}
STEM_PARTS = {'conv1.conv': '0', 'conv1.bn': '1', 'conv2.conv': '3', 'conv2.bn': '4'}


def _rename_part(rest: str, parts: dict) -> str:
    for old, new in sorted(parts.items(), key=lambda kv: -len(kv[0])):
        if rest.startswith(old + '.'):
            return new + rest[len(old):]
    return rest


def timm_to_official(sd: dict) -> dict:
    out = {}
    for key, value in sd.items():
        if m := re.fullmatch(r'stem\.(.*)', key):
            new = 'patch_embed.' + _rename_part(m.group(1), STEM_PARTS)
        elif m := re.fullmatch(r'stages\.(\d)\.blocks\.(\d+)\.(.*)', key):
            rest = _rename_part(m.group(3), BLOCK_PARTS)
            if rest.startswith('ls'):
                rest, value = f'layer_scale_{rest[2]}', value.reshape(-1, 1, 1)
            new = f'network.{2 * int(m.group(1))}.{m.group(2)}.{rest}'
        elif m := re.fullmatch(r'stages\.(\d)\.downsample\.(.*)', key):
            stage, rest = int(m.group(1)), _rename_part(m.group(2), DOWN_PARTS)
            if stage == 3:  # the attention-downsampling Embedding names these conv/bn
                rest = re.sub(r'^proj\.', 'conv.', re.sub(r'^norm\.', 'bn.', rest))
            new = f'network.{2 * stage - 1}.{rest}'
        else:
            new = {'head_dist.weight': 'dist_head.weight',
                   'head_dist.bias': 'dist_head.bias'}.get(key, key)
        out[new] = value
    for key, table in list(out.items()):
        if key.endswith('attention_biases'):
            side = int(table.shape[1] ** 0.5)
            down = '.attn.' in key
            index = official_bias_index((side + 1) // 2 if down else side, side, 2 if down else 1)
            out[key.replace('attention_biases', 'attention_bias_idxs')] = index
    return out


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize('arch', ['s0', 's1', 's2', 'l'])
def test_official_layout_gives_timm_logits(tmp_path, arch):
    ref = timm_model(arch)
    official = timm_to_official(ref.state_dict())
    assert any('.mlp.mid_norm.' in k for k in official)
    path = tmp_path / f'eformer_{arch}.pth'
    torch.save({'model': official, 'epoch': 449}, path)  # as the release files are saved
    model = efficientformer_v2_classifier(arch).eval()
    report = load_pretrained(model, str(path), CONVERTER, prefix='')
    assert report.layout == 'official' and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert max_rel_err(model(x), ref(x)) < 1e-5
    # the writer produces exactly the official names, shapes and index buffers
    written = CONVERTER.from_canonical(model.state_dict(), 'official')
    written = {k: v for k, v in written.items() if not k.endswith('num_batches_tracked')}
    official = {k: v for k, v in official.items() if not k.endswith('num_batches_tracked')}
    assert written.keys() == official.keys()
    assert all(torch.equal(written[k], official[k]) for k in official)


def test_timm_writer_loads_strictly_into_timm():
    model = randomize_(efficientformer_v2_classifier('s0'), layer_scale=FULL_LAYER_SCALE).eval()
    ref = timm.create_model('efficientformerv2_s0', pretrained=False).eval()
    ref.load_state_dict(CONVERTER.from_canonical(model.state_dict(), 'timm'), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_rel_err(model(x), ref(x)) < 1e-5
    with pytest.raises(ValueError, match="writable layouts: \\['mmeff', 'official', 'timm'\\]"):
        CONVERTER.from_canonical(model.state_dict(), 'onnx')


def test_layout_detection_and_foreign_checkpoints():
    timm_sd = timm.create_model('efficientformerv2_s0', pretrained=False).state_dict()
    canonical = efficientformer_v2_classifier('s0').state_dict()
    backbone = EfficientFormerV2('s0').state_dict()
    detector = {**{'backbone.' + k: v for k, v in backbone.items()},
                'neck.lateral_convs.0.conv.weight': torch.zeros(1)}
    official = timm_to_official(timm_sd)
    official_dense = {**{'backbone.' + k: v for k, v in official.items()
                         if k.startswith(('patch_embed', 'network'))},
                      'neck.fpn_convs.0.conv.weight': torch.zeros(1)}
    cases = {'timm': timm_sd, 'mmeff': canonical, 'official': official}
    for expected, sd in [*cases.items(), ('mmeff', backbone), ('mmeff', detector),
                         ('official', official_dense)]:
        assert CONVERTER.detect_layout(sd) == expected
        assert detect_family(sd) == ('EfficientFormerV2', expected)
    v1 = timm.create_model('efficientformer_l1', pretrained=False).state_dict()
    for foreign in (v1, {'conv.weight': torch.zeros(1)}):
        with pytest.raises(ValueError, match='not an EfficientFormerV2 state dict'):
            CONVERTER.detect_layout(foreign)
    # the official dense checkpoint keeps its neck keys (dropped later) and converts the rest
    converted = CONVERTER.to_canonical(official_dense, 'official')
    assert 'neck.fpn_convs.0.conv.weight' in converted
    assert 'backbone.stages.3.downsample.attn.q.local.weight' in converted


@pytest.mark.parametrize('layout', ['official', 'timm', 'mmeff-detector', 'mmeff-backbone'])
def test_backbone_init_cfg_loads_every_layout(tmp_path, layout):
    ref = timm_model('s0')
    source = efficientformer_v2_classifier('s0').eval()
    load_pretrained(source, ref.state_dict(), CONVERTER, prefix='')
    plain = {k[len('backbone.'):]: v for k, v in source.state_dict().items()
             if k.startswith('backbone.')}
    obj = {'official': {'model': timm_to_official(ref.state_dict())},
           'timm': ref.state_dict(),
           'mmeff-detector': {'state_dict': {**{'backbone.' + k: v for k, v in plain.items()},
                                             'rpn_head.rpn_conv.weight': torch.zeros(3)},
                              'meta': {'epoch': 12}},
           'mmeff-backbone': plain}[layout]
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    backbone = EfficientFormerV2('s0', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    own = backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in plain.items())
    report = backbone.load_checkpoint(str(path))
    assert not report.missing and not report.unexpected  # out norms are reported as fresh
    if layout in ('official', 'timm'):
        assert {k.split('.')[0] for k in report.dropped} == {'head'}


def test_other_arch_fails_naming_both(tmp_path):
    path = tmp_path / 's1.pth'
    torch.save(timm.create_model('efficientformerv2_s1', pretrained=False).state_dict(), path)
    with pytest.raises(ArchMismatchError,
                       match='looks like EfficientFormerV2-s1, but the model is '
                             'EfficientFormerV2-s0'):
        EfficientFormerV2('s0').load_checkpoint(str(path))


@pytest.mark.parametrize('arch', ['s0', 's1', 's2', 'l'])
def test_guess_arch(arch):
    sd = {'backbone.' + k: v for k, v in EfficientFormerV2(arch).state_dict().items()}
    assert CONVERTER.guess_arch(sd) == arch
    del sd['backbone.stem.conv2.conv.weight']
    assert CONVERTER.guess_arch(sd) is None


def test_tables_resized_for_another_pretraining_size():
    # random tables (timm's start at zero): a table loaded into the wrong block shows
    ref = randomize_(timm.create_model('efficientformerv2_s0', pretrained=False))
    model = EfficientFormerV2('s0', img_size=256)  # 8x8 and 16x16 tables
    report = load_pretrained(model, ref.state_dict(), CONVERTER, arch_name='s0',
                             allowed_missing=model.dense_only_prefixes)
    assert len(report.resized) == 5 and not report.missing
    assert model.stages[3].downsample.attn.attention_bias.table.shape == (8, 256)
    timm_tables = {k: v for k, v in ref.state_dict().items() if k.endswith('attention_biases')}
    ours = {k: v for k, v in model.state_dict().items() if k.endswith('attention_bias.table')}
    assert len(ours) == len(timm_tables) == 5
    for name, table in ours.items():
        src = timm_tables[name.replace('attention_bias.table', 'attention_biases')]
        side, new_side = math.isqrt(src.shape[1]), math.isqrt(table.shape[1])  # 7->8, 14->16
        expected = F.interpolate(src.view(1, -1, side, side), size=(new_side, new_side),
                                 mode='bicubic', align_corners=False).view(table.shape)
        torch.testing.assert_close(table, expected, msg=name)
    assert [o.shape[-1] for o in model.eval()(torch.randn(1, 3, 256, 256))] == [64, 32, 16, 8]


def test_official_round_trip_is_lossless():
    canonical = randomize_(efficientformer_v2_classifier('s0'),
                           layer_scale=FULL_LAYER_SCALE).state_dict()
    back = CONVERTER.to_canonical(CONVERTER.from_canonical(canonical, 'official'), 'official')
    canonical = {k: v for k, v in canonical.items() if not k.endswith('num_batches_tracked')}
    back = {k: v for k, v in back.items() if not k.endswith('num_batches_tracked')}
    assert back.keys() == canonical.keys()
    assert all(torch.equal(back[k], v) for k, v in canonical.items())


def test_official_layout_refuses_a_table_that_is_not_square():
    """The official code indexes its tables on a square grid: a 12-entry table cannot be
    written in that layout (mmeff's own and timm's can hold it)."""
    key = 'backbone.stages.2.blocks.4.token_mixer.attention_bias.table'
    with pytest.raises(ValueError, match=r'network\.4\.4\.token_mixer\.attention_biases: bias '
                                         r'table of 12 entries is not square; the official '
                                         r'layout only has square tables'):
        CONVERTER.from_canonical({key: torch.zeros(8, 12)}, 'official')


def test_generic_convert_tool_handles_v2(tmp_path, capsys):
    """tools/convert_checkpoint.py has no family-specific code: timm -> official -> mmeff."""
    from pathlib import Path
    tool = load_script(Path(__file__).resolve().parents[3] / 'tools' / 'convert_checkpoint.py')
    src, official, mmeff = (tmp_path / n for n in ('timm.pth', 'official.pth', 'mmeff.pth'))
    timm_sd = timm.create_model('efficientformerv2_s1', pretrained=False).state_dict()
    torch.save(timm_sd, src)
    assert tool.main([str(src), str(official), '--to', 'official']) == 0
    assert tool.main([str(official), str(mmeff)]) == 0
    out = capsys.readouterr().out
    assert out.count('family: EfficientFormerV2') == 2 and out.count('arch: s1') == 2
    assert 'layout: timm' in out and 'layout: official' in out
    written = torch.load(official, weights_only=True)
    assert 'network.5.attn.attention_bias_idxs' in written and 'dist_head.weight' in written
    canonical = torch.load(mmeff, weights_only=True)['state_dict']
    model = efficientformer_v2_classifier('s1')
    model.load_state_dict(canonical, strict=True)  # every key, nothing extra
    assert torch.equal(model.backbone.stages[3].downsample.attn.attention_bias.table,
                       timm_sd['stages.3.downsample.attn.attention_biases'])
