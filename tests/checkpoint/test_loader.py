"""The generic loading path, exercised with a tiny stand-in family (no real backbone needed)."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.checkpoint import (ArchMismatchError, LayoutConverter, load_pretrained,
                              read_state_dict, rename_keys)
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.layers import AttentionBias2d


class TinyConverter(LayoutConverter):
    family = 'Tiny'

    def detect_layout(self, sd):
        if any(k.startswith('features.') for k in sd):
            return 'upstream'
        if any('stem.' in k for k in sd):
            return 'mmeff'
        raise ValueError('not Tiny')

    def to_canonical(self, sd, layout):
        if layout == 'upstream':
            return rename_keys(sd, [(r'^features\.0\.', 'backbone.stem.'),
                                    (r'^features\.1\.', 'backbone.stages.0.'),
                                    (r'^fc\.', 'head.fc.')])
        if not any(k.startswith('backbone.') for k in sd):
            sd = {('backbone.' + k if k.startswith(('stem.', 'stages.')) else k): v
                  for k, v in sd.items()}
        return sd

    def guess_arch(self, sd):
        w = sd.get('backbone.stem.weight')
        return None if w is None else {4: 'small', 8: 'big'}.get(w.shape[0])


class Tiny(MobileBackbone):
    family = 'Tiny'
    arch_zoo = {'small': dict(width=4), 'big': dict(width=8)}
    arch_keys = ('width',)

    def __init__(self, arch='small', init_cfg=None):
        super().__init__(out_indices=(0,), init_cfg=init_cfg)
        self.arch_name, settings = self.resolve_arch(arch)
        w = settings['width']
        self.stem = nn.Conv2d(3, w, 3)
        self.stages = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(w))])
        self.bias = AttentionBias2d(2, (7, 7))
        self.extra = nn.Linear(w, w)  # something a checkpoint does not have

    def checkpoint_converter(self):
        return TinyConverter()

    def forward(self, x):
        return (self.stages[0](self.stem(x)),)


def upstream_state(width=4, table=49):
    torch.manual_seed(1)
    return {'features.0.weight': torch.randn(width, 3, 3, 3), 'features.0.bias': torch.randn(width),
            'features.1.0.weight': torch.randn(width), 'features.1.0.bias': torch.randn(width),
            'features.1.0.running_mean': torch.randn(width),
            'features.1.0.running_var': torch.rand(width),
            'bias.table': torch.randn(2, table), 'fc.weight': torch.randn(10, width)}


@pytest.mark.parametrize('wrap', ['plain', 'model', 'state_dict', 'module_prefix'])
def test_loads_every_container_and_reports(tmp_path, wrap):
    sd = upstream_state()
    sd['backbone.bias.table'] = sd.pop('bias.table')
    obj = {'plain': sd, 'model': {'model': sd, 'epoch': 3},
           'state_dict': {'state_dict': sd, 'meta': {'x': np.float64(1.0)}},
           'module_prefix': {'model': {'module.' + k: v for k, v in sd.items()}}}[wrap]
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    model = Tiny('small')
    report = load_pretrained(model, str(path), TinyConverter(), arch_name='small')
    assert report.layout == 'upstream'
    torch.testing.assert_close(model.stem.weight, sd['features.0.weight'])
    torch.testing.assert_close(model.bias.table.detach(), sd['backbone.bias.table'])
    assert report.dropped == ['head.fc.weight']
    assert sorted(report.missing) == ['extra.bias', 'extra.weight']


def test_other_size_bias_table_is_resized():
    sd = upstream_state(table=14 * 14)
    sd['backbone.bias.table'] = sd.pop('bias.table')
    model = Tiny('small')
    source = sd['backbone.bias.table'].clone()
    report = load_pretrained(model, sd, TinyConverter(), arch_name='small')
    assert report.resized and model.bias.table.shape == (2, 49)
    # the values: the 14x14 offset grid of each head resized bicubically to 7x7
    expected = F.interpolate(source.view(1, 2, 14, 14), size=(7, 7), mode='bicubic',
                             align_corners=False).view(2, 49)
    torch.testing.assert_close(model.bias.table.detach(), expected)


def test_other_arch_fails_naming_it():
    sd = upstream_state(width=8)
    with pytest.raises(ArchMismatchError, match=r'looks like Tiny-big, but the model is Tiny-small'):
        load_pretrained(Tiny('small'), sd, TinyConverter(), arch_name='small')


def test_init_cfg_pretrained_uses_loader(tmp_path):
    path = tmp_path / 'm.pth'
    sd = upstream_state()
    torch.save({'model': sd}, path)
    model = Tiny('small', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.stem.bias, sd['features.0.bias'])


def test_missing_file_and_bad_arch_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'nope\.pth.*an http\(s\) URL or a timm tag'):
        read_state_dict(str(tmp_path / 'nope.pth'))
    with pytest.raises(ValueError, match=r"unknown Tiny arch 'huge'; valid names are \['big', "
                                         r"'small'\]"):
        Tiny('huge')
    with pytest.raises(ValueError, match='lacks keys'):
        Tiny(dict(depth=3))


def test_untrusted_pickle_is_rejected_with_advice(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'obj': TinyConverter()}, path)
    with pytest.raises(RuntimeError, match='weights_only=True'):
        read_state_dict(str(path))


def test_file_without_weights_and_unknown_layout_are_named(tmp_path):
    torch.save({'meta': {'epoch': 1}, 'state_dict': {}}, tmp_path / 'no_weights.pth')
    with pytest.raises(ValueError, match=r"no state dict found in checkpoint: expected a dict of "
                                         r"tensors, or one under one of the keys \("):
        read_state_dict(str(tmp_path / 'no_weights.pth'))
    with pytest.raises(ValueError, match=r"^not Tiny\. no layout to compare with; the file's "
                                         r"first keys: \['other\.weight'\]"):
        TinyConverter().convert({'other.weight': torch.zeros(1)})


def test_two_families_claiming_one_checkpoint_is_an_error(monkeypatch):
    loader = sys.modules[LayoutConverter.__module__]
    monkeypatch.setattr(loader, 'CONVERTERS', {'Tiny': TinyConverter(), 'Twin': TinyConverter()})
    with pytest.raises(ValueError, match=r"cannot tell which model this checkpoint belongs to "
                                         r"\(ambiguous layouts \[\('Tiny', 'upstream'\), "
                                         r"\('Twin', 'upstream'\)\]\); known families: "
                                         r"\['Tiny', 'Twin'\]\. Pass the family explicitly"):
        loader.detect_family(upstream_state())


def test_backbone_without_converter_or_checkpoint_path_says_what_is_missing(tmp_path):
    class NoLayouts(Tiny):
        def checkpoint_converter(self):
            return None

    with pytest.raises(NotImplementedError, match=r'NoLayouts has no checkpoint converter: '
                                                  r'implement checkpoint_converter\(\)'):
        NoLayouts().load_checkpoint(str(tmp_path / 'any.pth'))
    with pytest.raises(ValueError, match=r"init_cfg type 'Pretrained' needs checkpoint=PATH"):
        Tiny(init_cfg=dict(type='Pretrained')).init_weights()
