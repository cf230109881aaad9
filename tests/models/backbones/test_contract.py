"""The family contract of ``MobileBackbone``: the same arguments are checked the same way, the
same attributes have the same types, and the same parts have the same names in all three
families (so one optimizer entry or one deploy rule serves all of them)."""
import re

import pytest
import torch
from mmengine.optim import DefaultOptimWrapperConstructor

from mmeff.deploy import fuse
from mmeff.models.backbones import EfficientFormer, EfficientFormerV2, EfficientViT
from mmeff.models.backbones.efficientformer import arch as v1_arch
from mmeff.models.backbones.efficientformer_v2 import arch as v2_arch
from mmeff.models.backbones.efficientvit import arch as vit_arch
from mmeff.models.layers import AttentionBias2d, DropPath
from mmeff.testing import randomize_

#: the smallest published arch of each family
FAMILIES = [(EfficientFormer, 'l1', 4), (EfficientFormerV2, 's0', 4), (EfficientViT, 'm0', 3)]
IDS = [cls.__name__ for cls, _, _ in FAMILIES]


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
def test_documented_custom_key_reaches_every_bias_table(cls, arch, num_stages):
    """docs/dropin.md: ``custom_keys={'attention_bias': dict(decay_mult=0.)}`` gives exactly the
    bias tables weight decay 0, in mmengine's real parameter groups."""
    model = cls(arch)
    constructor = DefaultOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        dict(custom_keys={'attention_bias': dict(decay_mult=0.)}))
    groups = constructor(model).optimizer.param_groups
    no_decay = {id(p) for g in groups if g['weight_decay'] == 0 for p in g['params']}
    decayed = {id(p) for g in groups if g['weight_decay'] == 0.05 for p in g['params']}
    tables = {id(m.table) for m in model.modules() if isinstance(m, AttentionBias2d)}
    assert tables and no_decay == tables
    assert len(no_decay) + len(decayed) == len(list(model.parameters()))
    names = [n for n, p in model.named_parameters() if id(p) in tables]
    assert all(n.endswith('.attention_bias.table') for n in names), names


@pytest.mark.parametrize('container', ['detector', 'backbone'])
@pytest.mark.parametrize('cls, arch, new_name, old_name, count', [
    (EfficientFormerV2, 's0', '.attention_bias.table', '.attn_bias.table', 5),
    (EfficientViT, 'm0', '.attn.attention_bias.table', '.attn.bias.table', 6),
], ids=['EfficientFormerV2', 'EfficientViT'])
def test_mmeff_checkpoint_with_the_old_bias_table_names_loads(tmp_path, cls, arch, new_name,
                                                              old_name, count, container):
    """mmeff files written before the tables were named alike (V2 ``attn_bias``, EfficientViT
    ``attn.bias``; EfficientFormer always had ``attention_bias``) still load completely."""
    source = randomize_(cls(arch))
    old = {re.sub(re.escape(new_name) + '$', old_name, k): v
           for k, v in source.state_dict().items()}
    assert sum(k.endswith(old_name) for k in old) == count
    obj = {'detector': {'state_dict': {'backbone.' + k: v for k, v in old.items()}},
           'backbone': old}[container]
    path = tmp_path / 'old.pth'
    torch.save(obj, path)
    target = cls(arch)
    report = target.load_checkpoint(str(path))
    assert report.layout == 'mmeff' and not report.missing and not report.unexpected
    own = target.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
def test_one_arch_entry_point(cls, arch, num_stages):
    """Every family validates its arch dict with its arch.py's ``validate_arch``, called by the
    base class's ``resolve_arch``; a dict that spells out a published arch gets its name."""
    module = {EfficientFormer: v1_arch, EfficientFormerV2: v2_arch, EfficientViT: vit_arch}[cls]
    assert cls.validate_arch is module.validate_arch
    name, settings = cls.resolve_arch(arch)
    assert name == arch and settings == module.validate_arch(cls.arch_zoo[arch])
    spelled_out = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in cls.arch_zoo[arch].items()}
    assert cls.resolve_arch(spelled_out)[0] == arch


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=0), 'in_channels must be a positive int, got 0'),
    (dict(in_channels=2.5), 'in_channels must be a positive int, got 2.5'),
    (dict(frozen_stages=-2), r'frozen_stages must be an int in -1\.\.\d .*got -2'),
    (dict(frozen_stages=1.5), r'frozen_stages must be an int in -1\.\.\d .*got 1\.5'),
    (dict(frozen_stages=9), 'frozen_stages=9 exceeds the [34] stages'),
    (dict(out_indices=1.5), 'out_indices must be an int or a sequence of ints.*got 1.5'),
    (dict(out_indices=(0, 1.5)), r'out_indices entries must be ints.*got 1\.5'),
    (dict(out_indices=(0, 9)), 'out_indices entry 9 is out of range'),
    (dict(out_indices=()), 'out_indices must name at least one stage'),
])
def test_arguments_are_checked_alike(cls, arch, num_stages, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(arch, **kwargs)


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
def test_out_channels_and_strides_are_tuples_matching_the_outputs(cls, arch, num_stages):
    model = cls(arch, out_indices=(-1, 0), frozen_stages=num_stages).eval()
    assert model.out_indices == (0, num_stages - 1)
    assert isinstance(model.out_channels, tuple) and isinstance(model.out_strides, tuple)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        outs = model(x)
    assert model.out_channels == tuple(o.shape[1] for o in outs)
    assert model.out_strides == tuple(128 // o.shape[-1] for o in outs)
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        model(x[0])


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
def test_one_drop_path_class_removed_by_the_deploy_path(cls, arch, num_stages):
    model = cls(arch, drop_path_rate=0.1)
    drops = [m for m in model.modules() if type(m).__name__ == 'DropPath']
    assert drops and all(isinstance(m, DropPath) for m in drops)
    fused = fuse(model)
    assert not any(isinstance(m, DropPath) for m in fused.modules())


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
def test_every_parameter_gets_a_gradient_for_any_out_indices(cls, arch, num_stages):
    """DDP-safe by construction (find_unused_parameters=False): stages after the last output
    and output norms of stages that are not outputs are not built, so one backward reaches
    every parameter; e.g. out_indices=(0, 1) of a 4-stage backbone builds two stages."""
    for out_indices in [(0, 1), (1,), (0, 2)]:
        model = cls(arch, out_indices=out_indices)
        assert len(model.stages) == max(out_indices) + 1
        sum(o.float().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, (out_indices, unused[:5])


@pytest.mark.parametrize('cls, arch, num_stages', FAMILIES, ids=IDS)
def test_full_checkpoint_loads_into_a_backbone_with_fewer_stages(cls, arch, num_stages):
    """A user's checkpoint holding every stage still loads when fewer are built: the tensors
    of the stages not built are reported as dropped, what is built loads bit for bit."""
    full = randomize_(cls(arch))
    part = cls(arch, out_indices=(0,))
    report = part.load_checkpoint({'state_dict': {f'backbone.{k}': v
                                                  for k, v in full.state_dict().items()}})
    assert not report.missing and not report.unexpected
    assert any(k.startswith(f'backbone.stages.{num_stages - 1}.') for k in report.dropped)
    for name, value in part.state_dict().items():
        assert torch.equal(value, full.state_dict()[name]), name
