"""mmeff.deploy.compile_for_cpu (the PyTorch CPU path) and the graph_forms switch it uses."""
import copy

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config

from mmeff.deploy import CompiledForCPU, compile_for_cpu
from mmeff.models.backbones import EfficientFormer
from mmeff.models.layers import graph_forms, is_graph_export, use_graph_forms
from mmeff.testing import FULL_LAYER_SCALE, randomize_

pytestmark = pytest.mark.usefixtures('one_thread')

#: MB4D blocks (whose two forms differ) and MB3D blocks in the last stage, on a 64x64 input
TINY = dict(widths=[8, 16, 24, 32], depths=[1, 1, 1, 2], num_vit=1)


def test_graph_forms_is_scoped_and_restored_after_an_error():
    assert not use_graph_forms()
    with pytest.raises(RuntimeError):
        with graph_forms():
            with graph_forms():
                assert use_graph_forms() and not is_graph_export()  # not an export
            assert use_graph_forms()  # the inner block restores the outer one's state
            raise RuntimeError
    assert not use_graph_forms()


@pytest.mark.parametrize('shape', [(1, 3, 64), (1, 3, 0, 64)])
def test_compile_for_cpu_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match='four positive sizes'):
        compile_for_cpu(torch.nn.Sequential(torch.nn.Identity()), shape)


def test_compiled_model_runs_frozen_in_graph_forms_on_a_channels_last_input():
    seen = []

    def fake_compiled(x):
        seen.append((use_graph_forms(), torch.is_grad_enabled(), inductor_config.freezing,
                     x.is_contiguous(memory_format=torch.channels_last)))
        return x
    CompiledForCPU(fake_compiled)(torch.randn(1, 3, 8, 8))
    # freezing as a config value around the call: torch.compile(options={'freezing': True})
    # compiled EfficientFormer-L1 without its speed-up (docs/deploy_speed.md)
    assert seen == [(True, False, True, True)]
    assert not use_graph_forms()


@pytest.mark.slow
def test_compiled_model_matches_eager_and_does_not_recompile():
    torch.manual_seed(0)
    model = randomize_(EfficientFormer(TINY, out_indices=(3,)),
                       layer_scale=FULL_LAYER_SCALE).eval()
    torch._dynamo.reset()
    compiled = compile_for_cpu(torch.nn.Sequential(copy.deepcopy(model)), (1, 3, 64, 64))
    frames = counters['frames']['ok']
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)[0]
    got = compiled(x)[0]
    assert got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-4
    # TorchDynamo guards on graph_forms' flag: a call made outside it would recompile
    assert counters['frames']['ok'] == frames, 'a call after compile_for_cpu recompiled'
