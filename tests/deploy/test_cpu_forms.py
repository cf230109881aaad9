"""mmeff.deploy.cpu_forms: EfficientViT's depth-wise and 1x1 convolutions in the forms
compile_for_cpu traces (shifted sums, linears), the same function as the convolutions."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.deploy import deploy
from mmeff.deploy.cpu_forms import (SMALL_MAP, LinearPointwiseConv, ShiftedSumDepthwiseConv,
                                    depthwise_as_shifted_sums, use_cpu_compile_forms)
from mmeff.models.backbones import EfficientFormer, EfficientViT
from mmeff.models.layers import graph_forms
from mmeff.testing import max_rel_err, randomize_


@pytest.mark.parametrize('hw,kernel,stride', [
    ((4, 4), 7, 1),    # kernel wider than the map (EfficientViT's q conv, stage 3)
    ((2, 3), 7, 1),    # outer taps read only padding
    ((7, 7), 3, 1), ((14, 14), 5, 1), ((14, 14), 3, 2), ((7, 6), 3, 2)])
def test_shifted_sums_equal_the_depthwise_conv(hw, kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(2, 6, *hw).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(6, 1, kernel, kernel), torch.randn(6)
    pad = kernel // 2
    expected = F.conv2d(x, weight, bias, stride, pad, groups=6)
    got = depthwise_as_shifted_sums(x, weight, bias, (stride, stride), (pad, pad))
    assert got.shape == expected.shape
    assert max_rel_err(got, expected) < 1e-6


def _graph_ops(module: nn.Module, x: torch.Tensor) -> str:
    with torch.no_grad(), graph_forms():
        return str(torch.export.export(module, (x,)).graph)


@pytest.mark.parametrize('side,form', [(14, 'linear'), (15, 'conv2d')])
def test_pointwise_takes_the_linear_only_compiled_and_on_small_maps(side, form):
    """The 224x224 model's maps are at most 14x14 (SMALL_MAP); larger maps keep oneDNN."""
    assert side * side <= SMALL_MAP or form == 'conv2d'
    conv = LinearPointwiseConv.from_conv(nn.Conv2d(8, 16, 1))
    x = torch.randn(1, 8, side, side).contiguous(memory_format=torch.channels_last)
    assert f'aten.{form}' in _graph_ops(conv, x)
    assert 'aten.linear' not in str(torch.export.export(conv, (x,)).graph)  # not compiling


def test_depthwise_takes_shifted_sums_only_compiled():
    conv = ShiftedSumDepthwiseConv.from_conv(nn.Conv2d(8, 8, 3, padding=1, groups=8))
    x = torch.randn(1, 8, 7, 7)
    assert 'aten.conv2d' not in _graph_ops(conv, x)
    assert 'aten.conv2d' in str(torch.export.export(conv, (x,)).graph)


def test_compile_forms_compute_the_deployed_efficientvit():
    """Swapped in place: same parameters and keys; run eagerly under the compile flag (the
    function compile_for_cpu traces) the model equals the unfused one."""
    torch.manual_seed(0)
    model = randomize_(EfficientViT('m0', extra_levels=(8,))).eval()
    deployed = deploy(copy.deepcopy(model), (1, 3, 160, 128)).to(
        memory_format=torch.channels_last)
    keys = list(deployed.state_dict())
    swapped = use_cpu_compile_forms(deployed)
    kinds = [type(m) for m in deployed.modules()]
    # per block: 2 residual DW convs, 2 FFNs of two 1x1 convs, 3 q convs; + patch merging, SE
    assert swapped > 40 and {ShiftedSumDepthwiseConv, LinearPointwiseConv} <= set(kinds)
    assert list(deployed.state_dict()) == keys
    x = torch.randn(1, 3, 160, 128)
    with torch.no_grad():
        expected = model(x)
        with graph_forms():
            got = deployed(x)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and max_rel_err(g, e) < 1e-5


def test_other_families_keep_their_convolutions():
    model = deploy(EfficientFormer('l1').eval(), (1, 3, 64, 64))
    assert use_cpu_compile_forms(model) == 0
