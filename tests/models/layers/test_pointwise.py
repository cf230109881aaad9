"""PointwiseConv2d (oneDNN 1x1 convs for CPU channels-last training) and scaled_batch_norm
(a layer scale inside a BatchNorm's affine) compute the same function as the plain modules:
outputs, every gradient and the BatchNorm's running statistics. Both are speed-ups of the
training step; a wrong transpose, a dropped bias gradient or a missed statistics update
would otherwise go unnoticed by the forward-only parity tests."""
import copy

import pytest
import torch
from torch import nn

from mmeff.models.layers import ConvBN, PointwiseConv2d
from mmeff.models.layers import pointwise
from mmeff.models.layers.conv_norm import scaled_batch_norm
from mmeff.testing import norm_rel_err

pytestmark = pytest.mark.usefixtures('one_thread')


def _pair(cin, cout, bias=True):
    gen = torch.Generator().manual_seed(0)
    ref = nn.Conv2d(cin, cout, 1, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(ref.weight.shape, generator=gen))
        if bias:
            ref.bias.copy_(torch.randn(cout, generator=gen))
    fast = PointwiseConv2d(cin, cout, bias=bias)
    fast.load_state_dict(ref.state_dict())
    return fast, ref


def _run(conv, x, grad):
    x = x.detach().clone().requires_grad_(x.requires_grad)
    out = conv(x)
    out.backward(grad)
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    return out, grads


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('input_grad', [True, False])
def test_fast_path_equals_aten_conv(bias, input_grad):
    size = 24  # 2 x 24 x 28 pixels: above MIN_ONEDNN_PIXELS
    fast, ref = _pair(12, 20, bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, size, size + 4, generator=gen).contiguous(
        memory_format=torch.channels_last)
    x.requires_grad_(input_grad)  # frozen early stages hand the conv an input without grad
    grad = torch.randn(2, 20, size, size + 4, generator=gen)
    assert pointwise.pointwise_fast_path_applies(x, fast.weight)
    out, grads = _run(fast, x, grad)
    ref_out, ref_grads = _run(ref, x, grad)
    assert type(out.grad_fn).__name__ == '_ChannelsLastPointwiseBackward'  # the path was taken
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert norm_rel_err(out, ref_out) < 1e-6
    assert len(grads) == len(ref_grads)
    for got, want in zip(grads, ref_grads):
        if want is None:
            assert got is None
        else:
            assert got.shape == want.shape and norm_rel_err(got, want) < 1e-6
            assert got.dim() != 4 or got.is_contiguous(memory_format=torch.channels_last)


def _path(conv, x):
    return type(conv(x).grad_fn).__name__


def test_aten_path_wherever_onednn_is_not_the_same_or_not_faster():
    fast, _ = _pair(8, 16)
    cl = torch.randn(2, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    assert _path(fast, cl) == '_ChannelsLastPointwiseBackward'
    assert _path(fast, cl.contiguous()) == 'ConvolutionBackward0'  # NCHW memory
    small = torch.randn(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    assert 256 <= pointwise.MIN_ONEDNN_PIXELS and _path(fast, small) == 'ConvolutionBackward0'
    with torch.autocast('cpu', dtype=torch.bfloat16):  # autocast decides the dtype itself
        assert _path(fast, cl) == 'ConvolutionBackward0'
    assert _path(fast.double(), cl.double()) == 'ConvolutionBackward0'
    fast.float()
    with torch.no_grad():
        traced = torch.jit.trace(fast, cl)  # graphs record the plain convolution
    assert 'aten::_convolution' in str(traced.graph)
    assert 'mkldnn' not in str(traced.graph)
    saved = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        assert _path(fast, cl) == 'ConvolutionBackward0'
    finally:
        torch.backends.mkldnn.enabled = saved


def test_convbn_pointwise_only_for_1x1_stride_1():
    assert type(ConvBN(4, 8, 1).conv) is PointwiseConv2d
    assert type(ConvBN(4, 8, 1, stride=2).conv) is nn.Conv2d
    assert type(ConvBN(4, 8, 3).conv) is nn.Conv2d
    assert type(ConvBN(4, 4, 1, groups=2).conv) is nn.Conv2d
    assert set(ConvBN(4, 8, 1, bias=True).state_dict()) == set(
        ConvBN(4, 8, 3, bias=True).state_dict())  # checkpoints keep their keys


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('momentum', [0.1, None])
def test_scaled_batch_norm_equals_bn_times_scale(training, momentum):
    gen = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(6, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(6, generator=gen))
        bn.running_mean.copy_(torch.randn(6, generator=gen))
        bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)
    bn.train(training)
    ref_bn = copy.deepcopy(bn)
    scale = (torch.rand(6, generator=gen) + 0.1).requires_grad_()
    ref_scale = scale.detach().clone().requires_grad_()
    x = torch.randn(3, 6, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 6, 5, 7, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):  # a second call sees the first call's statistics
        out = scaled_batch_norm(bn, xa, scale)
        ref = ref_bn(xb) * ref_scale[:, None, None]
        out.backward(grad)
        ref.backward(grad)
        assert norm_rel_err(out, ref) < 1e-6
    for got, want in [(xa.grad, xb.grad), (scale.grad, ref_scale.grad),
                      (bn.weight.grad, ref_bn.weight.grad), (bn.bias.grad, ref_bn.bias.grad)]:
        assert norm_rel_err(got, want) < 1e-5
    for name, buf in ref_bn.named_buffers():
        assert torch.allclose(dict(bn.named_buffers())[name], buf, rtol=1e-6, atol=1e-7), name
    assert isinstance(bn.weight, nn.Parameter)  # the module's own parameters are left in place


def test_scaled_batch_norm_without_affine_multiplies():
    bn = nn.BatchNorm2d(3, affine=False)
    x = torch.randn(2, 3, 4, 4)
    scale = torch.tensor([1.0, 2.0, -0.5])
    ref = copy.deepcopy(bn)(x) * scale[:, None, None]
    assert torch.allclose(scaled_batch_norm(bn, x, scale), ref, atol=1e-6)


@pytest.mark.parametrize('mode', ['train', 'eval', 'no_running_stats', 'sync'])
def test_convbn_bias_gradient_zero_only_where_batch_statistics_cancel_it(mode):
    """A 1x1 ConvBN in training hands back the conv bias's gradient as exact zeros (its
    batch-statistics BN subtracts the bias); in eval mode, and before a SyncBatchNorm (zero
    only summed over processes), the bias gradient is the summed output gradient as in aten.
    Every other gradient equals the plain nn.Conv2d + BN."""
    torch.manual_seed(0)
    fast = ConvBN(12, 20, 1, bias=True)
    if mode == 'no_running_stats':
        fast.bn = nn.BatchNorm2d(20, track_running_stats=False)
    if mode == 'sync':
        fast.bn = nn.SyncBatchNorm(20)  # without a process group: batch statistics, unsynced
    with torch.no_grad():
        fast.conv.bias.normal_()
        fast.bn.weight.uniform_(0.5, 1.5)
    fast.train(mode != 'eval')
    ref = copy.deepcopy(fast)
    conv = nn.Conv2d(12, 20, 1)
    conv.load_state_dict(ref.conv.state_dict())
    ref.conv = conv
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 24, 28, generator=gen).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 20, 24, 28, generator=gen)
    assert pointwise.pointwise_fast_path_applies(x, fast.conv.weight)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref_out = fast(xa), ref(xb)
    out.backward(grad)
    ref_out.backward(grad)
    assert type(fast.conv(x).grad_fn).__name__ == '_ChannelsLastPointwiseBackward'
    assert norm_rel_err(out, ref_out) < 1e-5 and norm_rel_err(xa.grad, xb.grad) < 1e-5
    assert norm_rel_err(fast.conv.weight.grad, ref.conv.weight.grad) < 1e-5
    bias_grad, ref_bias_grad = fast.conv.bias.grad, ref.conv.bias.grad
    if mode in ('train', 'no_running_stats'):
        assert torch.equal(bias_grad, torch.zeros(20))
        # aten's sum is rounding noise of the same zero
        assert float(ref_bias_grad.abs().max()) < 1e-4 * float(ref.conv.weight.grad.abs().max())
    elif mode == 'sync':  # summed as in aten: rounding noise here, a real sum per process
        assert not torch.equal(bias_grad, torch.zeros(20))
    else:
        assert float(bias_grad.abs().max()) > 1.0 and norm_rel_err(bias_grad, ref_bias_grad) < 1e-5
