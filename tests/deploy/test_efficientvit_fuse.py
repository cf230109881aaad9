"""Deploying EfficientViT: every Conv-BN and BN-Linear folded, attention in its deploy form,
biases cached or frozen, channels-last inside but NCHW outputs, fused == unfused (1e-5)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.deploy import fuse
from mmeff.models.backbones import EfficientViT
from mmeff.models.backbones.efficientvit.blocks import (CascadedGroupAttentionDeploy,
                                                        ResidualDWConv, dw_conv_matrix_index)
from mmeff.models.classifiers import efficientvit_classifier
from mmeff.models.layers import AttentionBias2d, BNLinear, ConvBN
from mmeff.testing import exported_onnx, max_rel_err, randomize_


@pytest.fixture(scope='module')
def m4_pair():
    torch.manual_seed(0)
    model = randomize_(EfficientViT('m4', extra_levels=(4, 8), drop_path_rate=0.1)).eval()
    return model, fuse(copy.deepcopy(model))


def test_everything_is_folded(m4_pair):
    _, fused = m4_pair
    kinds = {type(m) for m in fused.modules()}
    assert not kinds & {nn.BatchNorm2d, nn.BatchNorm1d, ConvBN, BNLinear, ResidualDWConv}
    assert not any(type(m).__name__ == 'DropPath' for m in fused.modules())
    attns = [m for m in fused.modules() if isinstance(m, CascadedGroupAttentionDeploy)]
    assert len(attns) == 6
    assert fused.stem.channels_last


@pytest.mark.parametrize('hw', [(224, 224), (225, 337), (320, 256)])
def test_fused_equals_unfused(m4_pair, hw):
    model, fused = m4_pair
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    for a, b in zip(out, ref):
        assert a.shape == b.shape and a.is_contiguous()  # NCHW out, whatever ran inside
        assert max_rel_err(a, b) < 1e-5


def test_compile_form_equals_unfused(m4_pair):
    """compile_for_cpu's form of the attention (the q depth-wise conv as a conv on the token
    view, not the gathered matrices) computes the same function, here run eagerly."""
    from mmeff.models.layers import graph_forms
    model, fused = m4_pair
    x = torch.randn(2, 3, 225, 161)
    with torch.no_grad(), graph_forms():
        out = fused(x)
    with torch.no_grad():
        ref = model(x)
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        assert max_rel_err(a, b) < 1e-5


def test_fused_classifier_with_distillation_equals_unfused():
    torch.manual_seed(0)
    model = randomize_(efficientvit_classifier('m1', num_classes=10, distillation=True)).eval()
    fused = fuse(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert max_rel_err(fused(x), model(x)) < 1e-5


def test_frozen_biases_are_constants_and_other_grids_still_work():
    torch.manual_seed(0)
    model = randomize_(EfficientViT('m0')).eval()
    fused = fuse(copy.deepcopy(model), input_shape=(1, 3, 225, 337))
    biases = [m for m in fused.modules() if isinstance(m, AttentionBias2d)]
    assert biases and all(b.frozen is not None for b in biases)
    assert fused.stages[2].blocks[0].mixer.attn.attention_bias.frozen.shape == (4, 24, 24)  # 4x6 window
    for hw in [(225, 337), (337, 225), (224, 224)]:  # (337, 225): a 6x4 window, also 24 tokens
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            for a, b in zip(fused(x), model(x)):
                assert max_rel_err(a, b) < 1e-5, hw


def test_residual_dwconv_fuses_identity_into_the_centre_tap():
    torch.manual_seed(0)
    block = randomize_(ResidualDWConv(8)).eval()
    with torch.no_grad():
        block.bn.weight.normal_()
    conv = block.fuse()
    x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(conv(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('hw, k', [((7, 7), 7), ((7, 7), 3), ((4, 6), 5), ((3, 2), 5)])
def test_dw_conv_matrix_equals_the_conv(hw, k):
    torch.manual_seed(0)
    w, b = torch.randn(6, 1, k, k), torch.randn(6)
    x = torch.randn(3, 6, *hw)
    index = dw_conv_matrix_index(hw, k)
    mats = F.pad(w.flatten(1), (0, 1))[:, index]  # (6, N, N)
    out = torch.baddbmm(b[:, None, None], mats, x.flatten(2).permute(1, 2, 0))
    ref = F.conv2d(x, w, b, padding=k // 2, groups=6)
    torch.testing.assert_close(out.permute(2, 0, 1).reshape_as(ref), ref)


def test_deploy_caches_follow_weight_updates_and_dtype_moves(m4_pair):
    model, fused = m4_pair
    fused = copy.deepcopy(fused)
    attn = fused.stages[1].blocks[0].mixer.attn
    window = torch.randn(1, 256, 7, 7)
    with torch.no_grad():
        before = attn(window)
        attn.dws[0].weight.mul_(2.0)  # in place: the cached q-conv matrix must be rebuilt
        changed = attn(window)
        attn.dws[0].weight.div_(2.0)
        torch.testing.assert_close(attn(window), before)
        assert max_rel_err(changed, before) > 1e-3
        x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
        double = copy.deepcopy(fused).double()
        reference = copy.deepcopy(model).double()
        # a stale float32 cache would fail here; the folded weights carry float32 rounding
        assert max_rel_err(double(x)[-1], reference(x)[-1]) < 1e-6


def test_deploy_forms_never_modify_their_source():
    """``fuse()`` may meet children that mmeff.models.layers.fusion already folded; it must copy them."""
    from mmeff.models.backbones.efficientvit.blocks import CascadedGroupAttention
    from mmeff.models.heads import EfficientViTClsHead
    torch.manual_seed(0)
    attn = randomize_(CascadedGroupAttention(64, 16, 4, (7, 7), (7, 5, 3, 3))).eval()
    head = randomize_(EfficientViTClsHead(64, 5, distillation=True)).eval()
    x = torch.randn(2, 64, 7, 7)
    with torch.no_grad():
        for module in (attn, head):
            expected = module(x)
            for name, child in list(module.named_children()):  # as mmeff.models.layers.fusion does
                if isinstance(child, nn.ModuleList):
                    for i, c in enumerate(child):
                        child[i] = c.fuse()
                elif hasattr(child, 'fuse') and not isinstance(child, AttentionBias2d):
                    setattr(module, name, child.fuse())
            first, second = module.fuse(), module.fuse()
            torch.testing.assert_close(first(x), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(second(x), first(x))


def test_attention_exports_as_nchw_convs():
    """The export form of cascaded group attention (docs/deploy_speed.md): every 1x1 and the
    q depth-wise conv stay Conv in NCHW (no token-view Gemm, no Toeplitz q matrix), and ONNX
    Runtime computes the unfused module's function; eager keeps the token form."""
    from mmeff.models.backbones.efficientvit.blocks import CascadedGroupAttention
    torch.manual_seed(0)
    attn = randomize_(CascadedGroupAttention(64, 16, 4, (7, 7), (7, 5, 3, 3))).eval()
    deployed = attn.fuse()
    deployed.attention_bias.freeze((7, 7))
    x = torch.randn(1, 64, 7, 7)
    ops, (got,) = exported_onnx(deployed, x)
    assert ops['Conv'] == 4 + 4 + 1 and 'Gemm' not in ops, ops  # qkv + q dw per head, proj
    with torch.no_grad():
        expected = attn(x)
        assert isinstance(deployed.qkvs[0], nn.Linear)
        assert max_rel_err(deployed(x), expected) < 1e-5
    assert max_rel_err(torch.from_numpy(got), expected) < 1e-5
