"""The export machinery on a tiny model made of mmeff's shared layers (no family needed).

The toy has every thing the deploy path must handle: Conv/Linear-BN pairs, BN-Linear head,
DropPath, Dropout, layer scale and an attention bias learned on a 4x4 grid (used here at other
grids, so the bias really is resized and then frozen).
"""
import sys

import numpy as np
import onnx
import pytest
import timm
import torch
from torch import nn

from mmeff.deploy.deploy_path import (ChannelAffine, StableGroupNorm, all_finite, deploy,
                                      deploy_violations, nan_bias_tables, traced_op_kinds)
from mmeff.deploy.export import ExportError, ExportOptions, check_options, export
from mmeff.deploy.onnx_check import graph_violations, ort_session, run_ort
from mmeff.deploy.parity import compare
from mmeff.deploy.parts import flatten_outputs, make_part
from mmeff.testing import randomize_

pytestmark = pytest.mark.usefixtures('one_thread')


def _export(model, tmp_path, **kwargs):
    options = ExportOptions(**{'input_hw': (160, 160), **kwargs})
    return export(make_part(randomize_(model)), str(tmp_path / 'model'), options)


def test_onnx_classifier_matches_eager_and_graph_is_deployed(toys, tmp_path):
    model = randomize_(toys.classifier())
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        expected = model(x)
    report = export(make_part(model), str(tmp_path / 'cls'), ExportOptions(input_hw=(160, 160)))
    assert report.ok, report.text()
    assert report.path.endswith('.onnx') and report.output_names == ['logits']
    assert report.runtime_parity.max_rel <= 1e-4 and report.fused_parity.max_rel <= 1e-4
    assert report.frozen_biases == 1
    graph = onnx.load(report.path)
    ops = {n.op_type for n in graph.graph.node}
    assert 'MatMul' in ops and 'Softmax' in ops  # the attention is there ...
    assert not ops & {'BatchNormalization', 'Dropout', 'Bernoulli', 'RandomUniformLike'}
    assert graph_violations(graph) == []
    # ... and the file computes what the unfused model computes on a new input
    got = run_ort(ort_session(report.path), x.numpy())[0]
    assert np.abs(got - expected.numpy()).max() <= 1e-4 * np.abs(expected.numpy()).max()
    assert 'parity PASS' in report.text()


def test_random_weights_make_fusion_observable(toys):
    """randomize_ must move BN/layer-scale/bias away from identity values."""
    plain, randomized = toys.classifier(), randomize_(toys.classifier())
    randomized.load_state_dict(plain.state_dict())  # same weights ...
    randomize_(randomized, seed=1)                     # ... then BN stats, gammas, tables
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(plain(x), randomized(x), rtol=1e-3, atol=1e-5)
    bn = randomized.backbone.stem[0].bn
    assert bn.running_var.min() >= 0.5 and not torch.allclose(bn.running_mean,
                                                              torch.zeros_like(bn.running_mean))


def test_deploy_removes_training_ops_that_the_check_would_see(toys):
    model = randomize_(toys.classifier())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        unfused = torch.jit.trace(model, x, check_trace=False)
    kinds = traced_op_kinds(unfused)
    assert kinds['aten::batch_norm'] > 0 and kinds['aten::dropout'] > 0
    problems = deploy_violations(model, unfused, biases_constant=False)
    assert any('BatchNorm' in p for p in problems) and any('dropout' in p for p in problems)
    assert any('DropPath' in p for p in problems) and any('biases' in p for p in problems)

    deploy(model, x.shape)
    with torch.no_grad(), nan_bias_tables(model):
        out = model(x)
    traced = torch.jit.trace(model, x, check_trace=False)
    assert deploy_violations(model, traced, all_finite([out])) == []
    assert not any(type(m).__name__ in ('DropPath', 'Dropout', 'BatchNorm2d', 'BatchNorm1d')
                   for m in model.modules())


def test_nan_tables_expose_a_bias_that_is_not_frozen(toys):
    model = randomize_(toys.classifier())
    deploy(model, (1, 3, 128, 128))      # frozen for 128x128 ...
    x = torch.randn(1, 3, 160, 160)      # ... so at 160x160 the table is used again
    with torch.no_grad(), nan_bias_tables(model):
        assert not all_finite([model(x)])
        assert all_finite([model(torch.randn(1, 3, 128, 128))])
    with torch.no_grad():
        assert all_finite([model(x)])    # tables restored


def test_functional_batch_norm_aborts_the_export(toys, tmp_path):
    with pytest.raises(ExportError, match='aten::batch_norm'):
        _export(toys.classifier_with_functional_bn(), tmp_path)
    assert not (tmp_path / 'model.onnx').exists()


def test_backbone_multi_output_with_dynamic_batch(toys, tmp_path):
    report = _export(toys.Backbone(), tmp_path, input_hw=(128, 160), dynamic_batch=True)
    assert report.ok, report.text()
    assert report.output_names == ['stage0', 'stage1', 'stage2', 'stage3']
    assert report.output_shapes[3] == (1, 32, 4, 5)
    (what, parity), = report.extra_parity.items()
    assert '[2, 3, 128, 160]' in what and parity.max_rel <= 1e-4
    outs = run_ort(ort_session(report.path), np.random.randn(3, 3, 128, 160).astype(np.float32))
    assert [o.shape[0] for o in outs] == [3, 3, 3, 3]


def test_dynamic_hw_is_refused_for_attention_biases(toys, tmp_path):
    with pytest.raises(ValueError, match='dynamic H/W is refused.*--dynamic-batch'):
        _export(toys.Backbone(), tmp_path, dynamic=True)


def test_dynamic_hw_without_attention_is_checked_at_a_second_size(toys, tmp_path):
    report = _export(toys.Backbone(attention=False), tmp_path, input_hw=(128, 128),
                     dynamic=True)
    assert report.ok, report.text()
    (what, parity), = report.extra_parity.items()
    assert '[2, 3, 160, 160]' in what and parity.max_rel <= 1e-4


def test_torchscript_round_trip(toys, tmp_path):
    report = _export(toys.classifier(), tmp_path, fmt='torchscript')
    assert report.ok and report.path.endswith('.pt')
    assert report.runtime == 'reloaded TorchScript' and report.runtime_parity.max_rel <= 1e-4
    assert 'batch_norm' not in report.graph_ops and report.graph_ops['matmul'] == 2


def test_coreml_ml_program_structure(toys, tmp_path):
    report = _export(toys.classifier(), tmp_path, fmt='coreml')
    assert report.ok, report.text()
    structure = report.coreml
    assert report.path.endswith('.mlpackage') and (tmp_path / 'model.mlpackage').is_dir()
    assert structure.opset == 'CoreML6'  # iOS16 target
    assert structure.inputs == [('input', (1, 3, 160, 160), 'FLOAT32')]
    assert structure.outputs == [('logits', (1, 10), 'FLOAT32')]
    assert structure.op_types['matmul'] == 2 and structure.op_types['softmax'] == 1
    assert 'batch_norm' not in structure.op_types and structure.outside_op_set == []
    assert structure.compute_precision == 'fp32'
    assert 'ML Program opset CoreML6' in report.text()


def test_coreml_fp16_backbone(toys, tmp_path):
    report = _export(toys.Backbone(), tmp_path, fmt='coreml', fp16=True, input_hw=(128, 128))
    assert report.ok, report.text()
    structure = report.coreml
    assert structure.compute_precision == 'fp16'
    assert [o[0] for o in structure.outputs] == ['stage0', 'stage1', 'stage2', 'stage3']
    assert structure.outputs[3][1] == (1, 32, 4, 4)
    assert structure.precisions.get('FLOAT32', 0) == 0


def test_coreml_inspection_flags_batch_norm(tmp_path):
    """The structural check can fail: a bare BN converts to a CoreML batch_norm op."""
    import coremltools as ct

    from mmeff.deploy.coreml_check import inspect_mlprogram
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)).eval()
    traced = torch.jit.trace(model, torch.randn(1, 3, 8, 8))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name='x', shape=(1, 3, 8, 8))],
                         convert_to='mlprogram', minimum_deployment_target=ct.target.iOS16)
    structure = inspect_mlprogram(mlmodel, ct.target.iOS16)
    assert structure.op_types.get('batch_norm') == 1
    assert structure.forbidden and 'batch_norm' in structure.forbidden[0]


@pytest.mark.parametrize('kwargs, message', [
    (dict(fmt='coreml', dynamic_batch=True), 'CoreML export is static-shape'),
    (dict(fmt='tflite'), 'unknown format'),
    (dict(fmt='torchscript', dynamic=True), 'only supported for ONNX'),
    (dict(input_hw=(0, 224)), 'must be positive'),
])
def test_unsupported_requests_fail_clearly(toys, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _export(toys.classifier(), tmp_path, **kwargs)


def test_fp16_onnx_needs_cuda(toys, tmp_path):
    if torch.cuda.is_available():  # pragma: no cover - GPU machines run the real thing
        report = _export(toys.classifier(), tmp_path, fp16=True)
        assert report.ok and report.precision == 'fp16'
    else:
        with pytest.raises(ValueError, match='--fp16 onnx .* CUDA device'):
            _export(toys.classifier(), tmp_path, fp16=True)


def test_models_without_an_mmeff_backbone_are_refused():
    with pytest.raises(ValueError, match='not built on an mmeff backbone'):
        make_part(timm.create_model('resnet18'))
    with pytest.raises(ValueError, match='unknown part'):
        make_part(nn.Linear(2, 2), 'head')


def test_part_must_fit_the_model(toys):
    with pytest.raises(ValueError, match='--part segmentor needs an MMSeg'):
        make_part(toys.classifier(), 'segmentor')
    with pytest.raises(ValueError, match='--part classifier needs a classification model'):
        make_part(toys.Backbone(), 'classifier')
    with pytest.raises(ValueError, match='--part detector-neck needs an MMDet detector with a '
                                         'neck; MobileClassifierNet is a classifier'):
        make_part(toys.classifier(), 'detector-neck')
    assert make_part(toys.classifier(), 'backbone').part == 'backbone'


def test_compare_reports_the_worst_output():
    ref = [torch.ones(2, 3), torch.full((4,), 10.0)]
    got = [torch.ones(2, 3), torch.full((4,), 10.5)]
    parity = compare(ref, got, ['a', 'b'])
    assert parity.max_abs == pytest.approx(0.5) and parity.max_rel == pytest.approx(0.05)
    assert parity.per_output['a']['max_abs'] == 0 and not parity.ok(1e-4)
    with pytest.raises(ValueError, match="output 'a'"):
        compare([torch.ones(2)], [torch.ones(3)], ['a'])


@pytest.mark.parametrize('groups, shape', [(1, (2, 48, 17, 9)), (4, (2, 8, 5, 6)),
                                           (2, (3, 6, 7)), (1, (2, 5))])
def test_stable_group_norm_is_group_norm(groups, shape):
    gn = nn.GroupNorm(groups, shape[1])
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    x = torch.randn(shape) * 3 + 1
    with torch.no_grad():
        assert torch.allclose(StableGroupNorm(gn)(x), gn(x), atol=1e-5)


def test_norms_without_a_conv_become_plain_arithmetic():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4), nn.GroupNorm(1, 4)).eval()
    randomize_(model)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        expected = model(x)
        deploy(model, x.shape)
        assert isinstance(model[1], ChannelAffine) and isinstance(model[2], StableGroupNorm)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_model_of_unknown_kind_output_of_unknown_type_and_output_count_are_named(toys):
    class Wrapper(nn.Module):  # an mmeff backbone, but neither classifier, segmentor nor detector
        def __init__(self):
            super().__init__()
            self.backbone = toys.Backbone()

    with pytest.raises(ValueError, match=r"cannot tell what to export from Wrapper; pass --part "
                                         r"with one of \('classifier'"):
        make_part(Wrapper())
    with pytest.raises(TypeError, match='cannot export an output of type dict'):
        flatten_outputs({'a': torch.ones(1)})
    with pytest.raises(ValueError, match='exported model returns 1 outputs, the reference 2'):
        compare([torch.ones(1), torch.ones(1)], [torch.ones(1)], ['a', 'b'])


def test_unknown_coreml_target_lists_the_known_ones(toys):
    options = ExportOptions(fmt='coreml', input_hw=(64, 64), coreml_target='iOS9')
    with pytest.raises(ValueError, match=r"unknown CoreML target 'iOS9'; choose one of "
                                         r"\('iOS15'"):
        check_options(options, make_part(toys.classifier()))


# ------------------------------------------------- CoreML failures (the converter is faked)
def _coreml_job(tmp_path) -> 'ExportJob':
    """A job for ``_convert_coreml``: a tiny conv net, its input, one output."""
    from mmeff.deploy.export import ExportJob, ExportReport
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    options = ExportOptions(fmt='coreml', input_hw=(8, 8))
    report = ExportReport(path=str(tmp_path / 'm.mlpackage'), fmt='coreml', part='backbone',
                          input_shape=tuple(x.shape), precision='fp32', output_names=['out'],
                          output_shapes=[(1, 4, 6, 6)])
    return ExportJob(module=module, traced=None, x=x, ref_out=[], names=['out'],
                     path=report.path, options=options, report=report)


def _fail_with(errors):
    """A stand-in for ``coremltools.convert`` raising the next of ``errors`` on every call."""
    calls = []

    def convert(source, **kwargs):
        calls.append(source)
        raise errors[min(len(calls), len(errors)) - 1]
    return convert, calls


def _refuse_capture(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError('capture refused')
    monkeypatch.setattr(torch.export, 'export', refuse)


def test_coreml_failure_of_the_traced_fallback_says_why_it_was_used(tmp_path, monkeypatch):
    import coremltools as ct

    from mmeff.deploy.export import _convert_coreml
    _refuse_capture(monkeypatch)  # torch.export fails: the torch.jit.trace graph is converted
    convert, calls = _fail_with([ValueError('op foo unsupported')])
    monkeypatch.setattr(ct, 'convert', convert)
    with pytest.raises(ExportError, match=r'coremltools could not convert the torch\.jit\.trace '
                                          r'graph \(ValueError: op foo unsupported\); it was used '
                                          r'because torch\.export failed \(RuntimeError: capture '
                                          r'refused\)'):
        _convert_coreml(_coreml_job(tmp_path))
    assert len(calls) == 1 and isinstance(calls[0], torch.jit.ScriptModule)
    # an unsupported op on the traced graph cannot be decomposed: the converter's own error
    convert, _ = _fail_with([NotImplementedError('Unsupported fx node relu, kind relu')])
    monkeypatch.setattr(ct, 'convert', convert)
    with pytest.raises(NotImplementedError, match='Unsupported fx node relu'):
        _convert_coreml(_coreml_job(tmp_path))


def test_coreml_unsupported_ops_are_decomposed_then_given_up(tmp_path, monkeypatch):
    """An op coremltools lacks is decomposed and the conversion retried; the same op failing
    again re-raises the converter's error; eight new ops in a row end the retries. (Capture and
    decomposition are stubbed: what is under test is the retry logic, not torch.export.)"""
    import coremltools as ct

    export_module = sys.modules[ExportError.__module__]  # the package exports a function
    decomposed = []
    monkeypatch.setattr(export_module, '_capture', lambda module, x, report: 'program')
    monkeypatch.setattr(export_module, '_decompose',
                        lambda program, ops: decomposed.append(list(ops)) or program)
    unsupported = [NotImplementedError(f'Unsupported fx node {op}_default, kind aten::{op}')
                   for op in ('relu', 'relu')]
    convert, calls = _fail_with(unsupported)
    monkeypatch.setattr(ct, 'convert', convert)
    with pytest.raises(NotImplementedError, match='kind aten::relu'):
        export_module._convert_coreml(_coreml_job(tmp_path))
    assert decomposed == [['lerp'], ['lerp', 'relu']]  # retried once, with relu decomposed

    ops = ('relu', 'sigmoid', 'tanh', 'abs', 'neg', 'exp', 'sin', 'cos')
    convert, calls = _fail_with([NotImplementedError(f'Unsupported fx node n, kind aten::{op}')
                                 for op in ops])
    monkeypatch.setattr(ct, 'convert', convert)
    with pytest.raises(RuntimeError, match=r"coremltools kept failing on unsupported ops: "
                                           r"\['lerp', 'relu', 'sigmoid'.*'cos'\]"):
        export_module._convert_coreml(_coreml_job(tmp_path))
    assert len(calls) == 8

    convert, calls = _fail_with([ValueError('converter bug')])  # not an op: not retried
    monkeypatch.setattr(ct, 'convert', convert)
    with pytest.raises(ValueError, match='converter bug'):
        export_module._convert_coreml(_coreml_job(tmp_path))
    assert len(calls) == 1


def test_coreml_inspection_needs_an_ml_program():
    from types import SimpleNamespace

    from coremltools.proto import Model_pb2

    from mmeff.deploy.coreml_check import inspect_mlprogram
    spec = Model_pb2.Model()
    spec.neuralNetwork.SetInParent()  # the old NeuralNetwork format
    with pytest.raises(ValueError, match='expected an ML Program, got a neuralNetwork model'):
        inspect_mlprogram(SimpleNamespace(get_spec=lambda: spec), target=None)
