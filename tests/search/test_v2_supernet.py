"""EfficientFormerV2 slimmable supernet: subnets sliced from it equal standalone models, the
search space rejects what it does not contain, and the sandwich step trains every subnet."""
import json
import random
from pathlib import Path

import pytest
import torch
from mmengine.optim import OptimWrapper

from mmeff.models.backbones.efficientformer_v2 import EfficientFormerV2
from mmeff.models.classifiers.classifier_net import MobileClassifierNet
from mmeff.models.heads.efficientformer_v2_head import EfficientFormerV2ClsHead
from mmeff.registry import MODELS
from mmeff.search.sandwich import SandwichClassifier
from mmeff.search.v2_space import V2SearchSpace
from mmeff.search.v2_supernet import EfficientFormerV2Supernet, extract_subnet
from mmeff.testing import FULL_LAYER_SCALE, randomize_

MAX_ARCH = dict(widths=(16, 32, 48, 64), depths=(2, 2, 3, 3), mlp_ratios=4, num_attn=1)
WIDTHS = ((8, 16), (16, 32), (32, 48), (48, 64))
SPACE = dict(width_choices=WIDTHS, ratio_choices=(2, 3, 4), min_depths=(1, 1, 2, 2))


def supernet(**kwargs) -> EfficientFormerV2Supernet:
    kwargs = dict(dict(img_size=64, layer_scale_init=0.5), **kwargs)
    return MODELS.build(dict(type='mmeff.EfficientFormerV2Supernet', arch=MAX_ARCH, **SPACE,
                             **kwargs))


def assert_same_function(got: torch.Tensor, want: torch.Tensor, arch) -> None:
    """Equal to fp32 rounding: the standalone model takes the training-speed paths the
    supernet's sliced layers do not (oneDNN 1x1 convs on channels-last maps, layer scales
    inside the BatchNorms), the same function in a different order of float operations."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda m: f'{arch}: {m}')


def subnets(net: EfficientFormerV2Supernet, count: int):
    rng = random.Random(1)
    return [net.max_arch, net.min_arch] + [net.sample_subnet(rng) for _ in range(count)]


def test_sliced_backbones_equal_standalone_models():
    torch.manual_seed(0)
    net = randomize_(supernet(num_attn_choices=(0, 1)), layer_scale=FULL_LAYER_SCALE).eval()
    x = torch.randn(2, 3, 64, 96)
    archs = subnets(net, 4) + [dict(MAX_ARCH, depths=(2, 1, 2, 2), num_attn=0)]
    assert len({str(a) for a in archs}) == len(archs)
    for arch in archs:
        arch, state = extract_subnet(net, arch)
        expected = net(x)
        standalone = EfficientFormerV2(arch, **net.standalone_kwargs()).eval()
        standalone.load_state_dict(state, strict=True)
        outputs = standalone(x)
        assert [o.shape[1] for o in outputs] == list(arch['widths'])
        for out, ref in zip(outputs, expected):
            assert_same_function(out, ref, arch)


def test_sliced_classifier_equals_standalone_classifier_in_train_and_eval():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='mmeff.ImageClassifier',
        backbone=dict(type='mmeff.EfficientFormerV2Supernet', arch=MAX_ARCH, **SPACE,
                      img_size=64, out_indices=(3,), with_out_norms=False),
        head=dict(type='mmeff.EfficientFormerV2SupernetHead', width_choices=WIDTHS[3],
                  num_classes=5, distillation=True)))
    randomize_(model, layer_scale=FULL_LAYER_SCALE)
    x = torch.randn(3, 3, 64, 64)
    for arch in subnets(model.backbone, 2):
        arch, state = extract_subnet(model, arch)
        standalone = MobileClassifierNet(
            EfficientFormerV2(arch, **model.backbone.standalone_kwargs()),
            EfficientFormerV2ClsHead(arch['widths'][-1], 5, distillation=True))
        standalone.load_state_dict(state, strict=True)
        assert_same_function(standalone.eval()(x), model.eval()(x), arch)
        cls, dist = standalone.train()(x)  # batch statistics: the subnet's own BNs
        ref_cls, ref_dist = model.train()(x)
        assert_same_function(cls, ref_cls, arch)
        assert_same_function(dist, ref_dist, arch)


@pytest.mark.parametrize('change, message', [
    (dict(widths=(16, 24, 48, 64)), r'widths\[1\] = 24 is not a width choice .* \(16, 32\)'),
    (dict(depths=(2, 3, 3, 3)), r'depths\[1\] = 3 is outside .* use 1\.\.2'),
    (dict(depths=(2, 2, 1, 3)), r'depths\[2\] = 1 is outside .* use 2\.\.3'),
    (dict(mlp_ratios=((4, 4), (4, 5), (4,) * 3, (4,) * 3)),
     r'mlp_ratios\[1\]\[1\] = 5 is not an expansion choice .* \(2, 3, 4\)'),
    (dict(num_attn=2), r'num_attn = 2 is not a choice .* \(1,\)'),
])
def test_set_subnet_rejects_arch_outside_the_space(change, message):
    net = supernet()
    with pytest.raises(ValueError, match=message):
        net.set_subnet(dict(MAX_ARCH, **change))
    assert net.active_arch == net.max_arch  # nothing switched


def test_search_space_construction_errors_name_the_fix():
    with pytest.raises(ValueError, match=r'width_choices\[2\] .* must end at the max arch width '
                                         r'48 of stage 3'):
        V2SearchSpace.create(MAX_ARCH, ((16,), (32,), (32, 40), (64,)))
    with pytest.raises(ValueError, match=r'min_depths\[0\] = 3 must be in 1\.\.2'):
        V2SearchSpace.create(MAX_ARCH, WIDTHS, min_depths=(3, 1, 2, 2))
    with pytest.raises(ValueError, match=r'mlp_ratios\[0\]\[0\] = 4 is not one of ratio_choices'):
        V2SearchSpace.create(MAX_ARCH, WIDTHS, ratio_choices=(2, 3))
    with pytest.raises(ValueError, match=r'num_attn_choices \(1, 2\) must lie in 0\.\.1'):
        V2SearchSpace.create(MAX_ARCH, WIDTHS, min_depths=(1, 1, 1, 2), num_attn_choices=(1, 2))


def sandwich_model(inplace: bool = False) -> SandwichClassifier:
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='mmeff.SandwichClassifier', inplace_distillation=inplace,
        backbone=dict(type='mmeff.EfficientFormerV2Supernet', arch=MAX_ARCH, **SPACE,
                      img_size=32, layer_scale_init=0.5, out_indices=(3,),
                      with_out_norms=False),
        head=dict(type='mmeff.EfficientFormerV2SupernetHead', width_choices=WIDTHS[3],
                  num_classes=5, distillation=False)))


def gradients(model, batch, sandwich):
    """Gradients that one train_step with the given subnets leaves (the step has lr 0)."""
    model.zero_grad(set_to_none=True)
    model.sandwich = lambda: sandwich
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    steps = []
    wrapper.step = lambda **kw: steps.append(1)
    wrapper.zero_grad = lambda **kw: None
    log = model.train_step(batch, wrapper)
    assert steps == [1]
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, log


def toy_batch():
    gen = torch.Generator().manual_seed(0)
    return dict(inputs=torch.randint(0, 256, (4, 3, 32, 32), generator=gen, dtype=torch.uint8),
                data_samples=dict(gt_label=torch.tensor([0, 1, 2, 3])))


def test_sandwich_step_sums_the_gradients_of_every_subnet():
    model = sandwich_model()
    supernet_ = model.backbone
    rand = supernet_.sample_subnet(random.Random(3))
    plan = [('max', supernet_.max_arch), ('min', supernet_.min_arch), ('rand1', rand)]
    batch = toy_batch()
    total, log = gradients(model, batch, plan)
    parts = [gradients(model, batch, [p])[0] for p in plan]
    assert set(log) == {'max.loss_cls', 'min.loss_cls', 'rand1.loss_cls', 'loss'}
    assert supernet_.active_arch == supernet_.max_arch  # validation sees the max subnet
    for name, grad in total.items():
        expected = sum(p[name] for p in parts if name in p)
        assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7), name
    g_max, g_min, g_rand = parts
    assert all(sum(float(g.abs().sum()) for g in p.values()) > 0 for p in parts)
    assert g_rand.keys() != g_max.keys() or any(
        not torch.equal(g_rand[n], g_max[n]) for n in g_max)
    stem = 'backbone.stem.conv2.conv.weight'  # output channels 8..15 exist in width 16 only
    assert g_max[stem][8:].abs().sum() > 0 and g_min[stem][8:].abs().sum() == 0
    assert g_min[stem][:8].abs().sum() > 0
    # each subnet trains its own BatchNorms: the min width's and the max width's
    assert g_min['backbone.stem.conv2.bn.8.weight'].abs().sum() > 0
    assert 'backbone.stem.conv2.bn.16.weight' not in g_min
    assert g_max['backbone.stem.conv2.bn.16.weight'].abs().sum() > 0
    assert g_min['head.norm.48.weight'].abs().sum() > 0 and 'head.norm.64.weight' not in g_min
    # elastic depth: the third block of stage 3 runs in the max subnet only
    deep = 'backbone.stages.2.blocks.2.mlp.fc1.conv.weight'
    assert g_max[deep].abs().sum() > 0 and deep not in g_min


def test_inplace_distillation_trains_small_subnets_on_the_max_soft_labels():
    model = sandwich_model(inplace=True)
    net = model.backbone
    batch = toy_batch()
    _, log = gradients(model, batch, [('max', net.max_arch), ('min', net.min_arch)])
    data = model.data_preprocessor(batch, True)
    with torch.no_grad():
        net.set_max()
        soft = model(data['inputs']).softmax(1)
        net.set_min()
        logits = model(data['inputs'])
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    label_loss = torch.nn.functional.cross_entropy(logits, data['data_samples']['gt_label'])
    assert log['min.loss_cls'] == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(label_loss)) > 1e-4


def test_sandwich_classifier_refuses_single_subnet_training_and_plain_heads():
    model = sandwich_model().train()
    data = model.data_preprocessor(toy_batch(), True)
    with pytest.raises(RuntimeError, match='train_step'):
        model(data['inputs'], data['data_samples'], mode='loss')
    with pytest.raises(ValueError, match='EfficientFormerV2SupernetHead'):
        MODELS.build(dict(type='mmeff.SandwichClassifier',
                          backbone=dict(type='mmeff.EfficientFormerV2Supernet', arch=MAX_ARCH,
                                        **SPACE, out_indices=(3,), with_out_norms=False),
                          head=dict(type='mmeff.EfficientFormerV2ClsHead', in_channels=64,
                                    num_classes=5, distillation=False)))


@pytest.mark.slow
def test_toy_config_trains_every_subnet_by_the_sandwich_rule(tmp_path):
    """``tools/train.py configs/search/supernet_v2_toy.py`` on a smaller toy tree: the loss
    of the max and of the min subnet goes down, and the trained supernet's min subnet loads
    into a standalone classifier."""
    from mmengine.config import Config

    from mmeff.datasets.toy_data import make_imagenet
    from mmeff.engine.launch import train
    from mmeff.models.classifiers import efficientformer_v2_classifier

    config = Path(__file__).resolve().parents[2] / 'configs/search/supernet_v2_toy.py'
    cfg = Config.fromfile(str(config))
    make_imagenet(tmp_path / 'data', num_train=64, num_val=16, size=(48, 48), seed=0)
    cfg.model.backbone.img_size = 32
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(data_root=str(tmp_path / 'data'), img_size=32)
        loader.batch_size = 16
    epochs = 6
    cfg.train_cfg.update(max_epochs=epochs, val_interval=epochs)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0,
                                end=epochs)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = epochs
    cfg.dump(str(tmp_path / 'toy.py'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: a second thread only waits on a shared CPU
    try:
        runner = train([str(tmp_path / 'toy.py'), '--work-dir', str(tmp_path / 'work')])
    finally:
        torch.set_num_threads(threads)

    (scalars,) = (tmp_path / 'work').glob('*/vis_data/scalars.json')
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    steps = [r for r in rows if 'max.loss_cls' in r]
    assert len(steps) == epochs * 4
    for name in ('max.loss_cls', 'min.loss_cls', 'loss'):
        first = sum(r[name] for r in steps[:4]) / 4
        last = sum(r[name] for r in steps[-4:]) / 4
        assert last < 0.97 * first, (name, first, last)
    assert any('accuracy/top1' in r for r in rows)  # validation ran (on the max subnet)

    model = runner.model
    arch, state = extract_subnet(model, model.backbone.min_arch)
    standalone = efficientformer_v2_classifier(arch, num_classes=5, distillation=False,
                                               img_size=32)
    standalone.load_state_dict(state, strict=True)
