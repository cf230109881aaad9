"""EfficientViT backbone: arch handling, output shapes at many sizes, window attention,
bias-table sizes, frozen_stages / norm_eval / with_cp (MMDet ResNet semantics)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.backbones import EfficientViT
from mmeff.models.backbones.efficientvit.blocks import (CascadedGroupAttention,
                                                        LocalWindowAttention)
from mmeff.registry import MODELS
from mmeff.testing import nchw_cascaded_attention, randomize_


def conv_out(n: int, times: int) -> int:
    for _ in range(times):
        n = (n - 1) // 2 + 1
    return n


# ----------------------------------------------------------------------------- arch handling
def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown EfficientViT arch 'm9'.*'m0'.*'m5'"):
        EfficientViT('m9')


@pytest.mark.parametrize('arch, match', [
    (dict(embed_dims=(64, 128), depths=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5,) * 4),
     'one entry per stage'),
    (dict(embed_dims=(64, 130, 192), depths=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5,) * 4),
     'width 130 is not divisible by num_heads=4'),
    (dict(embed_dims=(60, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5,) * 4),
     'divisible by 8'),
    (dict(embed_dims=(64, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5, 5)),
     'one odd size per head'),
    (dict(embed_dims=(64, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5, 4, 5, 5)),
     'one odd size per head'),
    (dict(embed_dims=(64, 128, 192), depths=(1, 2, 3), num_heads=(4, 4, 4)), "lacks keys \\['kernels'\\]"),
])
def test_bad_arch_dicts_are_named(arch, match):
    with pytest.raises(ValueError, match=match):
        EfficientViT(arch)


def test_custom_arch_dict_and_known_dict_is_recognised():
    custom = EfficientViT(dict(embed_dims=(32, 48), depths=(1, 1), num_heads=(2, 3),
                               kernels=(3, 3, 3)), out_indices=(0, 1))
    assert custom.arch_name is None
    outs = custom.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape for o in outs] == [(1, 32, 4, 4), (1, 48, 2, 2)]
    same_as_m0 = EfficientViT(dict(embed_dims=[64, 128, 192], depths=[1, 2, 3],
                                   num_heads=[4, 4, 4], kernels=[5, 5, 5, 5]))
    assert same_as_m0.arch_name == 'm0'
    wider_keys = EfficientViT(dict(EfficientViT.arch_zoo['m0'], key_dim=32))
    assert wider_keys.arch_name is None


@pytest.mark.parametrize('kwargs, match', [
    (dict(out_indices=(3,)), 'out of range for 3 stages'),
    (dict(extra_levels=(16,)), r'extra_levels \[16\] are not patch-embedding strides'),
    (dict(window_size=(7, 7)), 'window_size must be'),
    (dict(frozen_stages=4), 'exceeds the 3 stages'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EfficientViT('m0', **kwargs)


def test_bad_inputs_give_clear_errors():
    model = EfficientViT('m0').eval()
    with pytest.raises(ValueError, match='expects 3 input channels but got 1'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 16 pixels'):
        model(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        model(torch.randn(3, 64, 64))


def test_registered_in_mmeff_scope():
    model = MODELS.build(dict(type='EfficientViT', arch='m1', out_indices=(2,)))
    assert isinstance(model, EfficientViT) and model.out_channels == (192,)
    from mmengine.registry import MODELS as ROOT
    assert ROOT.build(dict(type='mmeff.EfficientViT', arch='m0')).out_strides == (16, 32, 64)


# ---------------------------------------------------------------------- bias-table sizes
def _table_sizes(model):
    return [stage.blocks[0].mixer.attn.attention_bias.table_size for stage in model.stages]


def test_bias_tables_follow_the_pretraining_window():
    assert _table_sizes(EfficientViT('m4')) == [(7, 7), (7, 7), (4, 4)]
    assert _table_sizes(EfficientViT('m4', img_size=384)) == [(7, 7), (7, 7), (6, 6)]
    assert _table_sizes(EfficientViT('m4', img_size=(224, 512))) == [(7, 7), (7, 7), (4, 7)]


def test_runtime_window_resizes_the_table_in_offset_space():
    """225x337: stage-3 map 4x6 -> one 4x6 window; its bias comes from the 4x4 table resized."""
    model = randomize_(EfficientViT('m0')).eval()
    attn = model.stages[2].blocks[0].mixer.attn
    seen = []
    handle = attn.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[-2:]))
    model(torch.randn(1, 3, 225, 337))
    handle.remove()
    assert seen == [(4, 6)]
    bias = attn.attention_bias((4, 6))
    # the expectation written out (not resize_offset_table, the function under test): each
    # head's 4x4 offset grid resized bicubically to 4x6
    table = F.interpolate(attn.attention_bias.table.detach().view(1, -1, 4, 4), size=(4, 6),
                          mode='bicubic', align_corners=False).view(-1, 4, 6)
    # query (0, 0) vs key (dy, dx) reads table[dy, dx]
    torch.testing.assert_close(bias[:, 0].view(-1, 4, 6), table)


# ------------------------------------------------------------------------ output shapes
SIZES = [(224, 224), (512, 512), (800, 1216), (1333, 800), (225, 337)]


@pytest.mark.parametrize('arch', ['m0', pytest.param('m4', marks=pytest.mark.slow)])
@pytest.mark.parametrize('train', [True, False])
def test_output_shapes_at_many_sizes(arch, train):
    torch.manual_seed(0)
    model = EfficientViT(arch, extra_levels=(4, 8)).train(train)
    dims = model.arch_settings['embed_dims']
    assert model.out_channels == (dims[0] // 4, dims[0] // 2, *dims)
    assert model.out_strides == (4, 8, 16, 32, 64)
    with torch.no_grad():
        for h, w in SIZES:
            outs = model(torch.randn(1, 3, h, w))
            expect = [(c, conv_out(h, t), conv_out(w, t))
                      for c, t in zip(model.out_channels, (2, 3, 4, 5, 6))]
            assert [tuple(o.shape[1:]) for o in outs] == expect, (h, w)
            assert all(torch.isfinite(o).all() for o in outs)


def test_out_indices_select_stages_and_extra_levels_come_first():
    model = EfficientViT('m0', out_indices=(-1, 1), extra_levels=(8,)).eval()
    outs = model(torch.randn(1, 3, 128, 96))
    assert model.out_strides == (8, 32, 64)
    assert [o.shape[1] for o in outs] == [32, 128, 192]


def test_batch_elements_are_independent_in_eval():
    """Windows of different images must never mix (partition/reverse bookkeeping)."""
    model = randomize_(EfficientViT('m0')).eval()
    x = torch.randn(2, 3, 200, 150)
    with torch.no_grad():
        both = model(x)
        single = model(x[1:])
    for a, b in zip(both, single):
        torch.testing.assert_close(a[1:], b, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------- windowing
def test_window_attention_equals_attention_per_padded_window():
    torch.manual_seed(0)
    lwa = randomize_(LocalWindowAttention(32, 16, 2, 7, (7, 7), (3, 5))).eval()
    x = torch.randn(1, 32, 9, 16)
    with torch.no_grad():
        out = lwa(x)
        padded = F.pad(x, (0, 5, 0, 5))  # 14 x 21: 2 x 3 windows
        ref = torch.zeros_like(padded)
        for i in range(2):
            for j in range(3):
                win = padded[:, :, 7 * i:7 * i + 7, 7 * j:7 * j + 7]
                ref[:, :, 7 * i:7 * i + 7, 7 * j:7 * j + 7] = lwa.attn(win)
    torch.testing.assert_close(out, ref[:, :, :9, :16])


def test_map_smaller_than_window_is_one_window_of_its_own_size():
    torch.manual_seed(0)
    lwa = randomize_(LocalWindowAttention(32, 16, 2, 7, (7, 7), (3, 5))).eval()
    x = torch.randn(1, 32, 5, 12)  # window (5, 7): H not padded to 7
    with torch.no_grad():
        out = lwa(x)
        padded = F.pad(x, (0, 2))
        ref = torch.cat([lwa.attn(padded[..., :7]), lwa.attn(padded[..., 7:])], dim=-1)
    torch.testing.assert_close(out, ref[..., :12])


@pytest.mark.parametrize('hw', [(7, 7), (4, 6)])
@pytest.mark.parametrize('channels_last', [True, False])
def test_attention_on_pixel_rows_trains_like_the_nchw_formulation(hw, channels_last, project):
    """The attention's row form (1x1 ConvBNs as GEMMs on pixel rows, BN on channels-last
    views, q's depth-wise conv on a channels-last map) is the official NCHW function in
    training: output, input and every parameter gradient, and every BN's running statistics
    (float64, so any wrong row/pixel order or BN grouping shows far above rounding)."""
    fast = randomize_(CascadedGroupAttention(24, 4, 3, (7, 7), (5, 3, 3))).double().train()
    ref = copy.deepcopy(fast)
    x = torch.randn(6, 24, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for model, forward in ((fast, fast), (ref, lambda t: nchw_cascaded_attention(ref, t))):
        inp = x.clone().requires_grad_()
        out = forward(inp)
        project([out]).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        results.append((out.detach(), inp.grad, grads))
    (out, gx, grads), (ref_out, ref_gx, ref_grads) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-10, atol=1e-10)
    assert grads.keys() == ref_grads.keys() and len(grads) == 3 * 3 + 3 * 3 + 3 + 1
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)
    ref_buffers = dict(ref.named_buffers())
    for name, buf in fast.named_buffers():
        torch.testing.assert_close(buf, ref_buffers[name], rtol=1e-10, atol=1e-12, msg=name)


# ------------------------------------------------------ frozen_stages / norm_eval / with_cp
def _bn_modes(module):
    return {m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize('frozen', [-1, 0, 1, 3])
def test_frozen_stages_like_mmdet_resnet(frozen, project, grads_ok):
    torch.manual_seed(0)
    model = randomize_(EfficientViT('m0', frozen_stages=frozen))
    model.train()
    frozen_parts = ([model.stem] if frozen >= 0 else []) + list(model.stages[:max(frozen, 0)])
    free_parts = list(model.stages[max(frozen, 0):]) + ([] if frozen >= 0 else [model.stem])
    for part in frozen_parts:
        assert all(not p.requires_grad for p in part.parameters())
        assert _bn_modes(part) == {False}
    for part in free_parts:
        assert all(p.requires_grad for p in part.parameters())
        assert _bn_modes(part) == {True}
    outs = model(torch.randn(1, 3, 128, 128))
    if frozen < 3:
        project(outs).backward()
        if frozen >= 0:
            assert all(p.grad is None for p in model.stem.parameters())
        else:
            grads_ok(model.stem.named_parameters())
        grads_ok(model.stages[-1].named_parameters())


def test_norm_eval_keeps_every_bn_in_eval_and_train_returns_self():
    model = EfficientViT('m0', norm_eval=True)
    assert model.train() is model
    assert _bn_modes(model) == {False}
    assert model.stages[0].training
    before = model.stem.conv1.bn.running_mean.clone()
    model(torch.randn(1, 3, 128, 128))
    torch.testing.assert_close(model.stem.conv1.bn.running_mean, before)


def test_with_cp_checkpoints_every_block_and_gives_the_same_gradients(monkeypatch):
    import mmeff.models.backbones.base as base
    calls = []
    real = base.cp.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(type(fn).__name__)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(base.cp, 'checkpoint', counting)
    torch.manual_seed(0)
    ref = randomize_(EfficientViT('m0', drop_path_rate=0.0))
    cp_model = EfficientViT('m0', with_cp=True)
    cp_model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 96, 96, requires_grad=True)
    grads = []
    for model in (ref, cp_model):
        model.train()
        x.grad = None
        sum(o.square().mean() for o in model(x)).backward()
        table = model.stages[0].blocks[0].mixer.attn.attention_bias.table
        grads.append((x.grad.clone(), table.grad))
    assert calls.count('SandwichBlock') == 6 and calls.count('SubsampleBlock') == 2
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_drop_path_is_active_in_training_only():
    model = EfficientViT('m0', drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)[-1], model(x)[-1])


def test_documented_no_decay_key_selects_exactly_the_bias_tables():
    from mmengine.optim import build_optim_wrapper
    model = EfficientViT('m0')
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        paramwise_cfg=dict(custom_keys={'attention_bias': dict(decay_mult=0.)})))
    no_decay = {id(p) for g in wrapper.optimizer.param_groups if g['weight_decay'] == 0
                for p in g['params']}
    tables = {id(m.table) for m in model.modules() if type(m).__name__ == 'AttentionBias2d'}
    assert no_decay == tables and len(tables) == 6
