import torch
from torch import nn

from mmeff.models.layers import BNLinear, ConvBN, LinearBN


def randomize_bn(bn):
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()


def test_conv_bn_fuse_matches():
    torch.manual_seed(0)
    m = ConvBN(8, 16, kernel_size=3, stride=2, groups=2).eval()
    randomize_bn(m.bn)
    x = torch.randn(2, 8, 11, 13)
    fused = m.fuse()
    assert isinstance(fused, nn.Conv2d)
    torch.testing.assert_close(fused(x), m(x), rtol=1e-5, atol=1e-5)


def test_linear_bn_fuse_matches_on_tokens():
    torch.manual_seed(0)
    m = LinearBN(8, 12).eval()
    randomize_bn(m.bn)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(m.fuse()(x), m(x), rtol=1e-5, atol=1e-5)


def test_bn_linear_fuse_matches():
    torch.manual_seed(0)
    m = BNLinear(8, 10).eval()
    randomize_bn(m.bn)
    x = torch.randn(4, 8)
    torch.testing.assert_close(m.fuse()(x), m(x), rtol=1e-5, atol=1e-5)
