"""Deploy form of EfficientFormerV2: every BN folded, layer scales / attention scale / talking-head
bias / pooled query folded into convs, biases cached or frozen; same outputs at every size."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmeff.deploy import fuse
from mmeff.models.backbones import EfficientFormerV2
from mmeff.models.backbones.efficientformer_v2.blocks import (Attention2d, Attention2dDeploy,
                                                              AttentionDownsample,
                                                              AttentionDownsampleDeploy,
                                                              LocalGlobalQuery)
from mmeff.models.classifiers import efficientformer_v2_classifier
from mmeff.models.layers import AttentionBias2d, ConvBN, DropPath, LayerScale
from mmeff.testing import FULL_LAYER_SCALE, max_rel_err, randomize_

DENSE_SIZES = [(224, 224), (512, 512), (800, 1216), (1333, 800), (512, 680), (225, 337)]


def assert_fully_fused(model: nn.Module) -> None:
    kinds = (ConvBN, LayerScale, DropPath, Attention2d, LocalGlobalQuery, nn.Dropout)
    left = [n for n, m in model.named_modules() if isinstance(m, kinds)
            and not isinstance(m, AttentionDownsampleDeploy)]
    left += [n for n, m in model.named_modules() if isinstance(m, AttentionDownsample)
             and not isinstance(m, AttentionDownsampleDeploy)]
    assert not left, f'not fused: {left[:5]}'
    bns = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    assert all(n.startswith('out_norm') for n in bns), bns  # only the standalone output norms


@pytest.mark.parametrize('arch', ['s0', 'l'])
def test_fused_classifier_matches(arch):
    torch.manual_seed(0)
    model = randomize_(efficientformer_v2_classifier(arch), layer_scale=FULL_LAYER_SCALE).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        fused = fuse(copy.deepcopy(model))
        assert_fully_fused(fused)
        assert max_rel_err(fused(x), expected) < 1e-5
        assert isinstance(fused.head[-1], nn.Linear)  # norm + both heads are one Linear


@pytest.fixture(scope='module')
def s0_pair():
    torch.manual_seed(0)
    model = randomize_(EfficientFormerV2('s0'), layer_scale=FULL_LAYER_SCALE).eval()
    return model, fuse(copy.deepcopy(model))


@pytest.mark.parametrize('size', DENSE_SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_fused_backbone_matches_at_dense_sizes(s0_pair, size):
    model, fused = s0_pair
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for got, expected in zip(fused(x), model(x)):
            assert got.shape == expected.shape
            assert max_rel_err(got, expected) < 1e-5


def test_fused_structure(s0_pair):
    _, fused = s0_pair
    assert_fully_fused(fused)
    mixers = [b.token_mixer for s in fused.stages for b in s.blocks if b.token_mixer is not None]
    assert len(mixers) == 4 and all(isinstance(m, Attention2dDeploy) for m in mixers)
    assert isinstance(fused.stages[3].downsample.attn, AttentionDownsampleDeploy)
    assert all(isinstance(b.ls2, nn.Identity) for s in fused.stages for b in s.blocks)
    assert isinstance(fused.stem.conv1, nn.Conv2d)
    assert fused.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # fusing again changes nothing
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = fused(x)
        again = fuse(fused)
        assert again is fused
        assert all(torch.equal(a, b) for a, b in zip(before, fused(x)))


def test_switch_to_deploy_with_frozen_biases_and_trace():
    torch.manual_seed(0)
    model = randomize_(EfficientFormerV2('s0', out_indices=(2, 3)),
                       layer_scale=FULL_LAYER_SCALE).eval()
    x = torch.randn(1, 3, 97, 131)  # odd sides at stride 16 (7x9) and 32 (4x5)
    with torch.no_grad():
        expected = model(x)
        deployed = copy.deepcopy(model).switch_to_deploy(input_shape=(1, 3, 97, 131))
        biases = [m for m in deployed.modules() if isinstance(m, AttentionBias2d)]
        assert len(biases) == 5 and all(b.frozen is not None for b in biases)
        assert all(max_rel_err(a, b) < 1e-5 for a, b in zip(deployed(x), expected))
        traced = torch.jit.trace(deployed, x, check_trace=False)  # no Python bias work left
        assert all(max_rel_err(a, b) < 1e-5 for a, b in zip(traced(x), expected))
        # another size still works: the frozen constant is only used for its own grid
        y = torch.randn(1, 3, 96, 64)
        assert all(max_rel_err(a, b) < 1e-5 for a, b in zip(deployed(y), model(y)))
