"""mmeff.deploy.compile_for_cpu (the PyTorch CPU path) and the graph_forms switch it uses."""
import copy

import pytest
import torch
from torch._inductor import aoti_load_package

from mmeff.deploy import CompiledForCPU, compile_for_cpu
from mmeff.models.backbones import EfficientFormer, EfficientViT
from mmeff.models.layers import graph_forms, is_graph_export, use_graph_forms
from mmeff.testing import FULL_LAYER_SCALE, max_rel_err, randomize_

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


def test_compiled_model_runs_without_grad_on_a_channels_last_input_of_its_shape():
    seen = []

    def fake_package(x):
        seen.append((torch.is_grad_enabled(), x.is_contiguous(memory_format=torch.channels_last)))
        return x
    compiled = CompiledForCPU(fake_package, (1, 3, 8, 8))
    compiled(torch.randn(1, 3, 8, 8))
    # the package was compiled for channels-last strides: it would misread an NCHW input
    assert seen == [(False, True)]
    with pytest.raises(ValueError, match=r'compiled for inputs of shape \(1, 3, 8, 8\).*again'):
        compiled(torch.randn(1, 3, 8, 16))


def test_compile_for_cpu_rejects_a_package_path_that_is_not_pt2(tmp_path):
    with pytest.raises(ValueError, match=r'\.pt2'):
        compile_for_cpu(torch.nn.Sequential(torch.nn.Identity()), (1, 3, 8, 8),
                        package_path=str(tmp_path / 'model.so'))


@pytest.fixture
def fake_aoti(monkeypatch):
    """AOTInductor faked: what compile_for_cpu hands it is recorded in the returned dict."""
    seen = {}

    def fake_compile(program, package_path, inductor_configs):
        seen.update(grad=torch.is_grad_enabled(), graph_forms=use_graph_forms(),
                    configs=inductor_configs, graph=str(program.graph))
        return package_path
    monkeypatch.setattr(torch._inductor, 'aoti_compile_and_package', fake_compile)
    monkeypatch.setattr(torch._inductor, 'aoti_load_package', lambda path: (lambda x: x))
    return seen


def test_package_is_exported_and_compiled_frozen_in_graph_forms(fake_aoti, tmp_path):
    """Inductor freezes only a graph compiled with autograd off: compiled outside no_grad, the
    package ran EfficientViT-M4 1.2x slower (docs/deploy_speed.md). AOTInductor itself is
    faked here (the real compile is the slow test below)."""
    seen = fake_aoti
    path = str(tmp_path / 'm.pt2')
    compiled = compile_for_cpu(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), (1, 3, 8, 8),
                               package_path=path)
    assert (seen['grad'], seen['graph_forms'], seen['configs']) == (False, True,
                                                                    {'freezing': True})
    assert 'conv' in seen['graph'] and compiled.package_path == path


def test_efficientvit_is_traced_in_its_cpu_forms_with_autotuned_gemms(fake_aoti):
    """On the small maps of a 224x224 (here 64x64) input only the stem's four dense convs
    stay convolutions (depth-wise: shifted sums, 1x1: linears; mmeff.deploy.cpu_forms), and
    Inductor autotunes the linears and stack-allocates small buffers (docs/deploy_speed.md,
    "EfficientViT's small kernels")."""
    compile_for_cpu(torch.nn.Sequential(EfficientViT('m0')), (1, 3, 64, 64))
    assert fake_aoti['configs'] == {'freezing': True, 'max_autotune': True,
                                    'aot_inductor.allow_stack_allocation': True}
    assert fake_aoti['graph'].count('aten.conv2d') == 4
    assert 'aten.linear' in fake_aoti['graph']


@pytest.mark.slow
def test_compiled_model_matches_eager_and_its_package_loads_alone(tmp_path):
    torch.manual_seed(0)
    model = randomize_(EfficientFormer(TINY, out_indices=(2, 3)),
                       layer_scale=FULL_LAYER_SCALE).eval()
    path = str(tmp_path / 'tiny.pt2')
    compiled = compile_for_cpu(torch.nn.Sequential(copy.deepcopy(model)), (1, 3, 64, 64),
                               package_path=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    for got in (compiled(x), aoti_load_package(path)(x.contiguous(
            memory_format=torch.channels_last))):
        assert len(got) == len(expected)  # the backbone's tuple of maps comes back as one
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert max_rel_err(g, e) < 1e-4
