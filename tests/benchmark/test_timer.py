"""The one timer: backends prepared one way (same outputs as the model as built), round-robin
timing, clocks; and the models the benchmark can select beyond classifiers."""
import pytest
import torch

from mmeff.benchmark.registry import select
from mmeff.benchmark.timer import (BACKENDS, Skip, Timing, cpu_name, measure, prepare,
                                   round_robin)
from mmeff.models.zoo import variant_names
from mmeff.testing import randomize_

pytestmark = pytest.mark.usefixtures('one_thread')


def test_round_robin_rotates_the_order_every_round():
    calls = []
    timings = round_robin([lambda: calls.append('a'), lambda: calls.append('b'),
                           lambda: calls.append('c')], runs=3)
    assert calls == ['a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b']
    assert [t.runs for t in timings] == [3, 3, 3]


def test_timing_statistics():
    t = Timing([3.0, 1.0, 2.0, 10.0])
    assert (t.runs, t.median_ms, t.min_ms, t.mean_ms) == (4, 2.5, 1.0, 4.0)
    assert t.p90_ms == pytest.approx(7.9)
    assert measure(lambda: None, warmup=0, runs=3, clock='cpu').runs == 3
    with pytest.raises(ValueError, match='clock'):
        measure(lambda: None, warmup=0, runs=1, clock='gpu')
    assert cpu_name()


@pytest.mark.parametrize('backend', ['eager', 'channels-last', 'fused', 'onnxruntime'])
def test_backends_compute_what_the_model_computes(toys, backend):
    x = torch.randn(1, 3, 96, 96)
    model = randomize_(toys.classifier()).eval()
    with torch.no_grad():
        expected = model(x)
    fresh = toys.classifier()
    fresh.load_state_dict(model.state_dict())
    out = prepare(backend, fresh, x)()
    got = torch.as_tensor(out[0]) if isinstance(out, list) else out
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_fused_block_on_channels_last_input(toys):
    """The latency table's way: a bare block (fusable=True), channels-last input."""
    block = randomize_(toys.classifier().backbone).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = block(x)
    fresh = toys.classifier().backbone
    fresh.load_state_dict(block.state_dict())
    got = prepare('fused', fresh, x, fusable=True, channels_last=True)()
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_fused_needs_a_deploy_path_and_backends_are_checked():
    with pytest.raises(Skip, match='not an mmeff model'):
        prepare('fused', torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match='unknown backend'):
        prepare('tpu', torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8))
    assert 'channels-last' in BACKENDS


def test_backends_missing_here_skip_with_the_reason(monkeypatch):
    """No C++ compiler, no onnxruntime, no CUDA: each backend says what is missing (the
    benchmark reports it and goes on) instead of failing inside torch or the import."""
    import shutil
    import sys
    conv, x = torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    monkeypatch.setattr(shutil, 'which', lambda name: None)
    with pytest.raises(Skip, match=r'torch\.compile needs a C\+\+ compiler'):
        prepare('compile', conv, x)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails as when not installed
    with pytest.raises(Skip, match=r'onnxruntime is not installed '
                                   r'\(pip install mmeff\[export\]\)'):
        prepare('onnxruntime', conv, x)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(Skip, match='no CUDA device on this machine'):
        prepare('cuda-fp16', conv, x)


def test_dense_backbones_are_selectable():
    names = [m.name for m in select(['backbones'])]
    assert names == [f'backbone/{v}' for v in variant_names()]
    assert [m.name for m in select(['EfficientFormer_V2-S0', 'backbone/efficientformer_v2_l'])] \
        == ['efficientformerv2_s0', 'backbone/efficientformerv2_l']  # zoo aliases
    (model,) = select(['backbone/efficientformer_l1'])
    assert model.task == 'backbone' and 'backbone/efficientformer_l1' not in \
        {m.name for m in select(['all'])}
    outs = model.build()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [48, 96, 224, 448]
