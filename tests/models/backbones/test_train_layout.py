"""The training step's speed-ups compute the same function: every family's training forward
runs channels_last on CPU (``MobileBackbone.train_channels_last``) and attention biases are
gathered with one ``index_select`` (``gather_offsets``). Outputs and every gradient must equal
the NCHW / advanced-indexing formulation within fp32 rounding (the official-code and timm
equality tests check the function itself and stay unchanged)."""
import copy

import pytest
import torch

from mmeff.models.layers.attention_bias import gather_offsets, relative_offset_index
from mmeff.registry import MODELS
from mmeff.models.layers import DropPath
from mmeff.testing import FULL_LAYER_SCALE, norm_rel_err, randomize_

pytestmark = pytest.mark.usefixtures('one_thread')

#: small members of each family (every block kind: V1 MB4D + MB3D, V2 FFN + attention +
#: attention downsampling, EfficientViT cascaded group attention with windows)
SMALL = {
    'EfficientFormer': dict(type='mmeff.EfficientFormer',
                            arch=dict(widths=[8, 16, 24, 32], depths=[1, 1, 1, 2], num_vit=1)),
    'EfficientFormerV2': dict(type='mmeff.EfficientFormerV2',
                              arch=dict(widths=(16, 16, 32, 32), depths=(1, 1, 2, 2), num_attn=1,
                                        mlp_ratios=((4,), (4,), (4, 4), (4, 4)))),
    'EfficientViT': dict(type='mmeff.EfficientViT', out_indices=(0, 1, 2),
                         arch=dict(embed_dims=[16, 32, 48], depths=[1, 1, 1],
                                   num_heads=[2, 2, 2], key_dim=4, kernels=[5, 3, 3, 3])),
}


def _step(model, x, project):
    """Outputs and gradients (input and every parameter) of one training forward/backward."""
    x = x.clone().requires_grad_()
    outs = model(x)
    project(outs).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    grads['input'] = x.grad
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize('family', sorted(SMALL))
def test_channels_last_training_equals_nchw(family, project, grads_ok):
    fast = randomize_(MODELS.build(SMALL[family])).train()
    plain = copy.deepcopy(fast)
    plain.train_channels_last = False
    layouts = []
    stem = fast.stem
    stem.register_forward_pre_hook(lambda m, args: layouts.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    outs, grads = _step(fast, x, project)
    ref_outs, ref_grads = _step(plain, x, project)
    assert layouts == [True]  # the fast path was taken ...
    for out, ref in zip(outs, ref_outs):
        assert out.is_contiguous() and out.shape == ref.shape  # ... and hands out NCHW maps
        assert norm_rel_err(out, ref) < 1e-4
    assert grads.keys() == ref_grads.keys()
    # a conv bias before a training-mode BN has a zero gradient by mathematics (rounding noise
    # in both layouts): errors are measured against the largest gradient of the model
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    for name, ref in ref_grads.items():
        err = float((grads[name] - ref).norm())
        assert err < 1e-4 * float(ref.norm()) + 1e-5 * scale, (name, err, float(ref.norm()))
    assert norm_rel_err(grads['input'], ref_grads['input']) < 1e-4
    grads_ok((n, p) for n, p in fast.named_parameters())
    fast.eval()
    layouts.clear()
    with torch.no_grad():
        fast(x)
    assert layouts == [family == 'EfficientFormerV2']  # eval: each family's own choice


@pytest.mark.parametrize('query_hw, key_hw, stride', [((4, 6), (4, 6), 1), ((2, 3), (4, 6), 2)])
def test_gather_offsets_equals_advanced_indexing(query_hw, key_hw, stride):
    index = relative_offset_index(query_hw, key_hw, stride)
    table = torch.randn(3, key_hw[0] * key_hw[1], requires_grad=True)
    upstream = torch.randn(3, *index.shape)
    fast = gather_offsets(table, index)
    (fast_grad,) = torch.autograd.grad(fast, table, upstream)
    ref = table[:, index]
    (ref_grad,) = torch.autograd.grad(ref, table, upstream)
    assert torch.equal(fast, ref)
    assert torch.allclose(fast_grad, ref_grad, rtol=1e-6, atol=1e-6)


def _unfolded(model):
    """A copy whose blocks take the generic ``x + drop_path(ls * branch(x))`` path."""
    plain = copy.deepcopy(model)
    for block in plain.modules():
        if hasattr(block, 'folds_layer_scales'):
            block.folds_layer_scales = lambda: False
    return plain


@pytest.mark.parametrize('family', ['EfficientFormer', 'EfficientFormerV2'])
@pytest.mark.parametrize('drop_path_rate', [0.0, 0.5])
def test_layer_scales_folded_in_training_equal_separate_multiplies(family, drop_path_rate,
                                                                   project, grads_ok):
    """V1's MB4D (ls2 in fc2's BN; without stochastic depth the token mixer as one lerp) and
    V2's blocks (ls1/ls2 in the BN ending the attention / FFN branch) fold their layer scales
    in training: outputs, gradients (layer scales included) and BN running statistics must
    equal the generic ``x + drop_path(ls * branch(x))`` path, with stochastic depth drawing the
    same masks."""
    fast = randomize_(MODELS.build(dict(SMALL[family], drop_path_rate=drop_path_rate)),
                      layer_scale=FULL_LAYER_SCALE).train()
    plain = _unfolded(fast)
    folding = [m for m in fast.modules() if hasattr(m, 'folds_layer_scales')]
    assert folding and all(m.folds_layer_scales() for m in folding)
    assert any(isinstance(m, DropPath) for m in fast.modules()) == (drop_path_rate > 0)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    outs, grads = _step(fast, x, project)
    torch.manual_seed(1)
    ref_outs, ref_grads = _step(plain, x, project)
    for out, ref in zip(outs, ref_outs):
        assert norm_rel_err(out, ref) < 1e-5
    # as above: conv biases before a training-mode BN have rounding-noise gradients
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    for name, ref in ref_grads.items():
        err = float((grads[name] - ref).norm())
        assert err < 1e-5 * float(ref.norm()) + 1e-5 * scale, (name, err, float(ref.norm()))
    assert any('ls' in name and float(g.abs().max()) > 1e-3 for name, g in grads.items())
    buffers = dict(plain.named_buffers())
    for name, buf in fast.named_buffers():
        if buf.is_floating_point():
            assert torch.allclose(buf, buffers[name], rtol=1e-5, atol=1e-6), name
    grads_ok((n, p) for n, p in fast.named_parameters())


def _layout(t):
    if t.dim() != 4 or t.is_contiguous():
        return 'nchw-or-any'
    return 'channels_last' if t.is_contiguous(memory_format=torch.channels_last) else 'strided'


@pytest.mark.parametrize('family', sorted(SMALL))
def test_training_backward_keeps_each_batchnorm_in_one_memory_format(family, project):
    """Every BatchNorm's gradient arrives in the memory format of its input. CPU BatchNorm and
    element-wise backward kernels are 6-60x slower on mixed formats; the backbone outputs and
    V2's head splits are boundaries whose gradients go back in the forward format
    (:func:`mmeff.models.layers.to_memory_format`), EfficientViT's window attention keeps its
    BatchNorms on channels-last views of pixel rows."""
    model = randomize_(MODELS.build(SMALL[family])).train()
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False  # backward hooks cannot watch an in-place op's input
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(
                lambda m, args, out, name=name: seen.__setitem__(name, [_layout(args[0])]))
            module.register_full_backward_hook(
                lambda m, grad_in, grad_out, name=name: seen[name].append(_layout(grad_out[0])))
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    project(model(x)).backward()
    assert len(seen) > 10 and all(len(v) == 2 for v in seen.values())
    assert any(v[0] == 'channels_last' for v in seen.values())
    mixed = {name: v for name, v in seen.items() if v[0] != v[1]}
    assert not mixed, mixed


def test_memory_format_boundary_returns_gradient_in_the_forward_format():
    from mmeff.models.layers import contiguous_nchw, to_memory_format
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = contiguous_nchw(x)
    assert out.is_contiguous() and torch.equal(out, x)
    out.backward(torch.ones_like(out))  # an NCHW gradient ...
    assert x.grad.is_contiguous(memory_format=torch.channels_last)  # ... back channels-last
    y = torch.randn(2, 3, 4, 5, requires_grad=True)
    z = to_memory_format(y, torch.contiguous_format)  # nothing to copy: a fresh output
    assert z is not y and z.data_ptr() == y.data_ptr()
    z.backward(torch.ones(2, 4, 5, 3).permute(0, 3, 1, 2))  # a channels-last shaped gradient
    assert y.grad.is_contiguous() and torch.equal(y.grad, torch.ones(2, 3, 4, 5))
    with torch.no_grad():
        assert contiguous_nchw(x).grad_fn is None


def test_pool_mixer_training_backward_equals_autograd_of_lerp():
    """MB4D's ``lerp(x, pool(x), ls1)`` has its own backward (:class:`_PoolLerp`: one lerp
    into the pooling's gradient, ``pool(x) - x`` kept from the forward); the output is the
    same lerp, and both gradients must be autograd's, in float64 and on channels-last maps."""
    from mmeff.models.backbones.efficientformer.blocks import _PoolLerp, pool_lerp
    pool = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    gamma = torch.randn(3, 1, 1, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, g: _PoolLerp.apply(a, g, pool), (x, gamma))
    out = pool_lerp(x.float(), pool, gamma.float())
    assert type(out.grad_fn).__name__ == '_PoolLerpBackward'
    upstream = torch.randn(out.shape, generator=gen).contiguous(memory_format=torch.channels_last)
    xf, gf = x.detach().float().requires_grad_(), gamma.detach().float().requires_grad_()
    fast = pool_lerp(xf, pool, gf)
    grads = torch.autograd.grad(fast, (xf, gf), upstream)
    ref = torch.lerp(xf, pool(xf), gf)
    ref_grads = torch.autograd.grad(ref, (xf, gf), upstream)
    assert torch.equal(fast, ref)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    for got, want in zip(grads, ref_grads):
        assert norm_rel_err(got, want) < 1e-6
