"""BN folding, checked in float64 with variances down to 1e-7.

In float32 with variances in 0.5-2 a fold that forgets ``eps`` (1e-5) is off by ~1e-5
relative, inside the usual 1e-5 tolerance; in float64 the tolerance is ~1e-7, and at a
variance of 1e-7 the eps term dominates the scale.
"""
import torch
from torch import nn

from mmeff.models.layers import BNLinear, ConvBN, LinearBN


def randomize_bn(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Random statistics and affine; variances log-uniform in 1e-7 .. 2 (the tiny ones make
    ``eps`` matter), in float64."""
    bn.double()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.copy_(10 ** torch.empty_like(bn.running_var).uniform_(-7, 0.3))
        bn.weight.normal_()
        bn.bias.normal_()


def test_conv_bn_fuse_matches():
    torch.manual_seed(0)
    m = ConvBN(8, 16, kernel_size=3, stride=2, groups=2).double().eval()
    randomize_bn(m.bn)
    x = torch.randn(2, 8, 11, 13, dtype=torch.float64)
    fused = m.fuse()
    assert isinstance(fused, nn.Conv2d) and fused.weight.dtype == torch.float64
    torch.testing.assert_close(fused(x), m(x))


def test_linear_bn_fuse_matches_on_tokens():
    torch.manual_seed(0)
    m = LinearBN(8, 12).double().eval()
    randomize_bn(m.bn)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(m.fuse()(x), m(x))


def test_bn_linear_fuse_matches():
    torch.manual_seed(0)
    m = BNLinear(8, 10).double().eval()
    randomize_bn(m.bn)
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(m.fuse()(x), m(x))
