"""The generic fuse walk: ours are folded, foreign ``fuse`` methods and training ops handled."""
import torch
from torch import nn

from mmeff.deploy import fuse
from mmeff.models.layers import ConvBN


class ForeignFuse(nn.Module):
    """Like MMDet's FPG neck: a method called ``fuse`` that needs an argument."""

    def fuse(self, fuse_dict):
        raise AssertionError('must not be called by mmeff.models.layers.fusion')

    def forward(self, x):
        return x


def test_fuse_folds_ours_and_leaves_foreign_fuse_methods_alone():
    torch.manual_seed(0)
    # float64 and variances down to 1e-7: a fold that forgets BN's eps shows (see
    # test_conv_norm.py)
    model = nn.Sequential(ConvBN(3, 8, 3), nn.Dropout(0.5), ForeignFuse()).double()
    with torch.no_grad():
        model[0].bn.running_var.copy_(10 ** torch.linspace(-7, 0.3, 8, dtype=torch.float64))
        model[0].bn.running_mean.normal_()
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    ref = model.eval()(x)
    fused = fuse(model)
    assert fused is model
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[1], nn.Identity)
    assert isinstance(model[2], ForeignFuse)
    torch.testing.assert_close(model(x), ref)
