"""EfficientFormer backbone: architecture, any-size inputs, bias caching, training options."""
import copy

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmeff.benchmark.memory import saved_tensor_bytes
from mmeff.models.backbones import EfficientFormer
from mmeff.models.backbones.efficientformer.blocks import MB3D, MB4D
from mmeff.models.classifiers import efficientformer_classifier
from mmeff.models.heads import EfficientFormerClsHead
from mmeff.registry import MODELS
from mmeff.testing import FULL_LAYER_SCALE, randomize_

TINY = dict(widths=[8, 16, 24, 32], depths=[1, 1, 2, 2], num_vit=1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_kinds(backbone: EfficientFormer):
    return [[type(b).__name__ for b in stage.blocks] for stage in backbone.stages]


@pytest.fixture(scope='module')
def l7_classifier():
    return efficientformer_classifier('l7')


# ------------------------------------------------------------------------------- architecture
@pytest.mark.parametrize('arch, expected', [('l1', 12_289_928), ('l3', 31_406_000),
                                            ('l7', 82_229_328)])
def test_classifier_param_count_equals_official(arch, expected, request):
    model = request.getfixturevalue('l7_classifier') if arch == 'l7' \
        else efficientformer_classifier(arch)
    assert n_params(model) == expected


def test_table6_structure(l7_classifier):
    l1 = EfficientFormer('l1')
    assert block_kinds(l1) == [['MB4D'] * 3, ['MB4D'] * 2, ['MB4D'] * 6, ['MB4D'] * 3 + ['MB3D']]
    assert [s.blocks[0].mlp.fc1.conv.out_channels for s in l1.stages] == [192, 384, 896, 1792]
    assert l1.stem.conv1.conv.out_channels == 24 and l1.stem.conv1.conv.stride == (2, 2)
    assert isinstance(l1.stages[0].downsample, nn.Identity)
    assert all(s.downsample.conv.kernel_size == (3, 3) and s.downsample.conv.stride == (2, 2)
               for s in l1.stages[1:])
    pool = l1.stages[0].blocks[0].token_mixer.pool
    assert pool.kernel_size == 3 and pool.count_include_pad is False
    attn = l1.stages[3].blocks[3].token_mixer
    assert (attn.num_heads, attn.key_dim, attn.val_dim) == (8, 32, 128)
    assert attn.attention_bias.table.shape == (8, 49)
    l7 = l7_classifier.backbone
    assert block_kinds(l7)[2] == ['MB4D'] * 18 and block_kinds(l7)[3] == ['MB3D'] * 8
    assert [s.blocks[0].ls1.gamma.numel() for s in l7.stages] == [96, 192, 384, 768]


def test_registered_and_buildable_from_an_mmdet_style_config():
    backbone = ROOT_MODELS.build(dict(type='mmeff.EfficientFormer', arch='l1', out_indices=(1, 3)))
    assert isinstance(backbone, EfficientFormer) and backbone.out_channels == (96, 448)
    head = MODELS.build(dict(type='EfficientFormerClsHead', in_channels=448, num_classes=10))
    assert isinstance(head, EfficientFormerClsHead)


def test_arch_errors_are_clear():
    with pytest.raises(ValueError, match=r"valid names are \['l1', 'l3', 'l7'\]"):
        EfficientFormer('l2')
    with pytest.raises(ValueError, match='lacks keys'):
        EfficientFormer(dict(widths=[8, 16, 24, 32], depths=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match="'depths' must be 4 positive ints"):
        EfficientFormer(dict(TINY, depths=[1, 1, 2]))
    with pytest.raises(ValueError, match="'widths' must be 4 positive ints"):
        EfficientFormer(dict(TINY, widths=[8, 0, 24, 32]))
    with pytest.raises(ValueError, match="'widths' must be 4 positive ints"):
        EfficientFormer(dict(TINY, widths=[8, 16.0, 24, 32]))
    with pytest.raises(ValueError, match=r'num_vit=5 exceeds the blocks of stages 3 and 4'):
        EfficientFormer(dict(TINY, num_vit=5))
    with pytest.raises(ValueError, match='num_vit must be an int >= 0'):
        EfficientFormer(dict(TINY, num_vit=-1))
    with pytest.raises(ValueError, match=r"unknown keys \['width'\]"):
        EfficientFormer(dict(TINY, width=3))
    with pytest.raises(ValueError, match='out_indices entry 4 is out of range'):
        EfficientFormer(TINY, out_indices=(4,))
    with pytest.raises(ValueError, match='frozen_stages'):
        EfficientFormer(TINY, frozen_stages=5)


def test_arch_dict_equal_to_a_named_arch_gets_its_name():
    assert EfficientFormer(dict(widths=[48, 96, 224, 448], depths=[3, 2, 6, 4],
                                num_vit=1)).arch_name == 'l1'
    assert EfficientFormer(dict(widths=[48, 96, 224, 448], depths=[3, 2, 6, 4], num_vit=1,
                                mlp_ratio=2)).arch_name is None
    assert EfficientFormer(TINY).arch_name is None


def test_num_vit_beyond_last_stage_puts_mb3d_at_the_tail_of_stage3():
    torch.manual_seed(0)
    # perturbed: at init the layer scales (1e-5) and the zero tables shrink the table's
    # gradient to ~1e-14, which is rounding noise, not a signal
    model = randomize_(EfficientFormer(dict(TINY, num_vit=3)), layer_scale=FULL_LAYER_SCALE)
    assert block_kinds(model) == [['MB4D'], ['MB4D'], ['MB4D', 'MB3D'], ['MB3D', 'MB3D']]
    x = torch.randn(2, 3, 97, 65)
    outs = model.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 25, 17), (2, 16, 13, 9), (2, 24, 7, 5),
                                              (2, 32, 4, 3)]
    # The outputs pass GroupNorm(1, C): their mean (0) and mean square (1) are fixed by
    # construction, so a loss of either leaves only rounding noise as gradient. A fixed random
    # projection depends on the weights.
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i))
               for i, o in enumerate(outs)]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    bias = model.stages[2].blocks[1].token_mixer.attention_bias.table
    assert bias.grad is not None and torch.isfinite(bias.grad).all()
    assert bias.grad.abs().max() > 1e-4
    model.eval()
    with torch.no_grad():
        first, again = model(x), model(x)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


# ------------------------------------------------------------------------------------ inputs
def test_odd_input_sizes_give_ceil_divided_maps():
    model = EfficientFormer('l1', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 225, 337))
    assert [tuple(o.shape) for o in outs] == [(1, 48, 57, 85), (1, 96, 29, 43),
                                              (1, 224, 15, 22), (1, 448, 8, 11)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.slow
def test_detection_and_segmentation_sizes_train_and_eval():
    """(H, W): COCO 1333x800 and 800x1216, ADE20K 512x512, Cityscapes 2048x1024, an odd size."""
    model = EfficientFormer('l1')
    for hw in [(800, 1333), (800, 1216), (512, 512), (1024, 2048), (225, 337)]:
        expected = [(1, c, -(-hw[0] // s), -(-hw[1] // s))
                    for c, s in zip((48, 96, 224, 448), (4, 8, 16, 32))]
        x = torch.randn(1, 3, *hw)
        for mode in (True, False):
            model.train(mode)
            with torch.no_grad():
                outs = model(x)
            assert [tuple(o.shape) for o in outs] == expected, (hw, mode)
            assert all(torch.isfinite(o).all() for o in outs)


def test_bad_inputs_raise_clear_errors():
    model = EfficientFormer(TINY)
    with pytest.raises(ValueError, match='too small'):
        model(torch.randn(1, 3, 16, 64))
    with pytest.raises(ValueError, match='expects 3 input channels but got 1'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r'expects an \(N, C, H, W\) tensor'):
        model(torch.randn(3, 64, 64))
    gray = EfficientFormer(TINY, in_channels=1)
    assert len(gray(torch.randn(1, 1, 64, 64))) == 4


def test_out_indices_and_output_norms():
    model = EfficientFormer(TINY, out_indices=(-1, 1))
    assert model.out_indices == (1, 3) and model.out_channels == (16, 32)
    norms = {n: m for n, m in model.named_children() if n.startswith('out_norm')}
    assert sorted(norms) == ['out_norm1', 'out_norm3']
    assert all(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in norms.values())
    outs = model.eval()(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32]
    # GroupNorm(1, C) normalises each sample over C, H, W (before its affine, identity here)
    assert outs[1].mean(dim=(1, 2, 3)).abs().max() < 1e-5
    plain = EfficientFormer(TINY, with_out_norms=False)
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.modules())


# ------------------------------------------------------------------------- attention-bias cache
def _bias_cache_sizes(model):
    return [len(b.token_mixer.attention_bias._bias_cache) for s in model.stages for b in s.blocks
            if isinstance(b, MB3D)]


def test_bias_cache_is_per_resolution_in_eval_and_off_in_training():
    model = EfficientFormer(TINY, out_indices=(3,))
    x_a, x_b = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 225, 337)
    model.train()
    model(x_a)
    assert _bias_cache_sizes(model) == [0]
    model.eval()
    with torch.no_grad():
        model(x_a)
        model(x_b)
        model(x_b)
    assert _bias_cache_sizes(model) == [2]


def test_bias_cache_invalidated_by_load_state_dict_in_eval():
    x = torch.randn(1, 3, 96, 160)
    model = EfficientFormer(TINY).eval()
    with torch.no_grad():
        before = model(x)
    other = randomize_(EfficientFormer(TINY), seed=3, layer_scale=FULL_LAYER_SCALE).eval()
    model.load_state_dict(other.state_dict())  # still in eval mode, cache filled
    with torch.no_grad():
        after, expected = model(x), other(x)
    assert not torch.allclose(after[-1], before[-1])
    for a, e in zip(after, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_bias_cache_follows_in_place_updates_of_the_table():
    """E.g. an EMA/SWA update applied to a model kept in eval mode: the parameter's version
    changes, so the cached bias must not be reused."""
    x = torch.randn(1, 3, 96, 160)
    model = randomize_(EfficientFormer(TINY), layer_scale=FULL_LAYER_SCALE).eval()
    with torch.no_grad():
        before = model(x)
        model.stages[3].blocks[1].token_mixer.attention_bias.table.mul_(-3.0)
        after = model(x)
        fresh = copy.deepcopy(model)
        fresh.stages[3].blocks[1].token_mixer.attention_bias.clear_cache()
        expected = fresh(x)
    assert not torch.allclose(after[-1], before[-1])
    assert torch.equal(after[-1], expected[-1])


def test_bias_cache_invalidated_by_to():
    x = torch.randn(1, 3, 96, 160)
    model = randomize_(EfficientFormer(TINY), layer_scale=FULL_LAYER_SCALE).eval()
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        model(x)  # fills the float32 cache
        model.double()
        out = model(x.double())
        expected = reference(x.double())
    assert out[-1].dtype == torch.float64
    assert all(torch.equal(a, e) for a, e in zip(out, expected))
    bias = model.stages[3].blocks[1].token_mixer.attention_bias
    assert len(bias._bias_cache) == 1  # the float32 entry went with .double()


# ---------------------------------------------------------------------------- training options
def test_train_returns_self_and_drop_path_schedule():
    model = EfficientFormer(TINY, drop_path_rate=0.3)
    assert model.train() is model and model.eval() is model
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.0, 0.06, 0.12, 0.18, 0.24, 0.3])


def test_frozen_stages_get_no_grad_and_stay_unchanged():
    model = EfficientFormer(TINY, frozen_stages=2)
    frozen_prefixes = ('stem.', 'stages.0.', 'stages.1.', 'out_norm0.', 'out_norm1.')
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    model.train()
    for module in (model.stem, model.stages[0], model.stages[1], model.out_norm0):
        assert not module.training
    assert model.stages[2].training
    loss = sum(o.pow(2).mean() for o in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        frozen = name.startswith(frozen_prefixes)
        assert p.requires_grad is not frozen, name
        if frozen:
            assert p.grad is None, name
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(frozen_prefixes):
            assert torch.equal(after[key], value), key  # weights and BN statistics
    assert not torch.equal(after['stages.2.blocks.0.mlp.fc1.conv.weight'],
                           before['stages.2.blocks.0.mlp.fc1.conv.weight'])


@pytest.mark.parametrize('sync_bn', [False, True])
def test_norm_eval_keeps_bn_statistics(sync_bn):
    model = EfficientFormer(TINY, norm_eval=True)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert all(isinstance(m, nn.SyncBatchNorm) for m in bns) == sync_bn
    stats = copy.deepcopy([(m.running_mean, m.running_var) for m in bns])
    model(torch.randn(2, 3, 64, 64))
    for m, (mean, var) in zip(bns, stats):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    control = EfficientFormer(TINY).train()
    control(torch.randn(2, 3, 64, 64))
    assert not torch.equal(control.stem.conv1.bn.running_mean, torch.zeros(4))


def test_with_cp_same_outputs_and_grads_less_saved_memory():
    arch = dict(TINY, num_vit=3)
    plain = randomize_(EfficientFormer(arch), layer_scale=FULL_LAYER_SCALE)
    cp_model = EfficientFormer(arch, with_cp=True)
    cp_model.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 96, 64)
    grads = []
    for model in (plain, cp_model):
        model.train()
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        if model is plain:
            ref_outs = outs
    for a, b in zip(ref_outs, outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)

    def training_forward(model):
        return lambda: sum(o.sum() for o in model(x))

    full, checkpointed = saved_tensor_bytes(training_forward(plain)), \
        saved_tensor_bytes(training_forward(cp_model))
    print(f'saved for backward: {full / 2**20:.2f} MiB without with_cp, '
          f'{checkpointed / 2**20:.2f} MiB with with_cp')
    assert checkpointed < 0.5 * full


# ----------------------------------------------------------------------------------------- head
def test_head_training_returns_both_logits_and_eval_their_average():
    head = EfficientFormerClsHead(32, num_classes=5)
    x = torch.randn(2, 32, 3, 4)
    cls, dist = head.train()(x)
    assert cls.shape == dist.shape == (2, 5) and not torch.equal(cls, dist)
    torch.testing.assert_close(head.eval()(x), (cls + dist) / 2)
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(head(tokens), head(x))
    single = EfficientFormerClsHead(32, num_classes=5, distillation=False).train()
    assert single(x).shape == (2, 5) and single.head_dist is None
    with pytest.raises(ValueError, match='num_classes'):
        EfficientFormerClsHead(32, num_classes=0)


def test_classifier_builder_rejects_dense_only_options():
    with pytest.raises(ValueError, match='out_indices is fixed'):
        efficientformer_classifier('l1', out_indices=(0, 3))
    model = efficientformer_classifier(TINY, num_classes=7)
    assert model.backbone.out_indices == (3,)
    assert not any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_mb4d_and_mb3d_blocks_follow_the_paper_equations():
    torch.manual_seed(0)
    block = MB4D(8, layer_scale_init=0.5).eval()
    x = torch.randn(2, 8, 5, 6)
    pooled = nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    mid = x + 0.5 * (pooled - x)
    mlp = block.mlp.fc2(nn.functional.gelu(block.mlp.fc1(mid)))
    torch.testing.assert_close(block(x), mid + 0.5 * mlp)
    block3 = MB3D(8, layer_scale_init=0.5).eval()
    tokens = torch.randn(2, 12, 8)
    attn = block3.token_mixer
    n1 = block3.norm1(tokens)
    q, k, v = attn.split_heads(n1)
    scores = q @ k.transpose(-2, -1) / 32 ** 0.5 + attn.attention_bias((3, 4))
    mixed = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 12, -1))
    mid = tokens + 0.5 * mixed
    expected = mid + 0.5 * block3.mlp.fc2(nn.functional.gelu(block3.mlp.fc1(block3.norm2(mid))))
    torch.testing.assert_close(block3(tokens, (3, 4)), expected)
