"""Deploy mode of EfficientFormer: folded BN / layer scales / LN affines / attention scale."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmeff.deploy import fuse
from mmeff.models.backbones import EfficientFormer
from mmeff.models.backbones.efficientformer.blocks import (MB3D, MB4D, ConvStemDeploy,
                                                           MB3DDeploy, MB4DDeploy)
from mmeff.models.classifiers import efficientformer_classifier
from mmeff.models.heads.efficientformer_head import EfficientFormerClsHeadDeploy
from mmeff.models.layers import LayerScale
from mmeff.testing import FULL_LAYER_SCALE, exported_onnx, max_rel_err, randomize_

TINY_3D_IN_STAGE3 = dict(widths=[8, 16, 24, 32], depths=[1, 1, 2, 2], num_vit=3)


def test_fused_classifier_matches_unfused_and_has_nothing_left_to_fold():
    model = randomize_(efficientformer_classifier('l1'), layer_scale=FULL_LAYER_SCALE).eval()
    fused = fuse(copy.deepcopy(model))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_rel_err(fused(x), model(x)) < 1e-5
    kinds = {type(m) for m in fused.modules()}
    assert not any(issubclass(k, (_BatchNorm, LayerScale, nn.LayerNorm, MB4D, MB3D))
                   for k in kinds)
    assert {ConvStemDeploy, MB4DDeploy, MB3DDeploy, EfficientFormerClsHeadDeploy} <= kinds


@pytest.mark.parametrize('arch, hw', [('l1', (97, 161)), (TINY_3D_IN_STAGE3, (97, 130))])
def test_fused_backbone_matches_unfused_at_other_sizes(arch, hw):
    model = randomize_(EfficientFormer(arch), layer_scale=FULL_LAYER_SCALE).eval()
    fused = copy.deepcopy(model).switch_to_deploy()
    assert isinstance(fused, EfficientFormer)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        for a, b in zip(fused(x), model(x)):
            assert a.shape == b.shape and max_rel_err(a, b) < 1e-5


def test_block_fuse_leaves_the_original_block_intact():
    torch.manual_seed(0)
    block4 = randomize_(MB4D(16), layer_scale=FULL_LAYER_SCALE).eval()
    block3 = randomize_(MB3D(16), layer_scale=FULL_LAYER_SCALE).eval()
    x4, x3 = torch.randn(2, 16, 5, 7), torch.randn(2, 35, 16)
    with torch.no_grad():
        ref4, ref3 = block4(x4), block3(x3, (5, 7))
        deploy4, deploy3 = block4.fuse(), block3.fuse()
        assert torch.equal(block4(x4), ref4) and torch.equal(block3(x3, (5, 7)), ref3)
        assert max_rel_err(deploy4(x4), ref4) < 1e-5 and max_rel_err(deploy3(x3, (5, 7)), ref3) < 1e-5


@pytest.mark.filterwarnings('ignore::FutureWarning', 'ignore::torch.jit.TracerWarning')
def test_frozen_biases_for_export_and_tracing():
    model = randomize_(efficientformer_classifier(dict(TINY_3D_IN_STAGE3, num_vit=1)),
                       layer_scale=FULL_LAYER_SCALE).eval()
    fused = fuse(copy.deepcopy(model), input_shape=(1, 3, 224, 224))
    bias = fused.backbone.stages[3].blocks[-1].attention_bias
    assert bias.frozen is not None and bias.frozen.shape == (8, 49, 49)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        traced = torch.jit.trace(fused, x)
        assert max_rel_err(traced(x), model(x)) < 1e-5
    assert 'contiguous' not in str(traced.graph)  # no layout op in exported graphs


def test_mb4d_exports_as_nchw_convs_and_keeps_the_pytorch_form_in_eager():
    """The export form of the 4-D blocks is plain NCHW (the layout ONNX Runtime's NCHWc
    convs stay in; docs/deploy_speed.md): no Transpose / MatMul / Gemm on an NHWC view, no
    lerp (exported as Where); eager keeps the channels-last linears."""
    model = randomize_(EfficientFormer(dict(widths=[8, 16, 24, 32], depths=[2, 1, 1, 1],
                                            num_vit=0), out_indices=(3,)),
                       layer_scale=FULL_LAYER_SCALE).eval()
    fused = copy.deepcopy(model).switch_to_deploy()
    x = torch.randn(1, 3, 64, 96)
    ops, (got,) = exported_onnx(fused, x)
    assert not set(ops) & {'Transpose', 'Gemm', 'MatMul', 'Where'}, ops
    assert ops['Conv'] == 2 + 3 + 4 * 5  # stem, downsamples, 2 depth-wise + fc1 + fc2 per MB4D
    with torch.no_grad():
        expected = model(x)[0]
        assert isinstance(fused.stages[0].blocks[0].fc1, nn.Linear)
        assert max_rel_err(fused(x)[0], expected) < 1e-5
    assert max_rel_err(torch.from_numpy(got), expected) < 1e-5
