"""Every family's smallest variant exports to ONNX and CoreML at 224x224 through the deploy path.

Weights are random but BN statistics, layer scales and bias tables are randomised away from
their identity initialisation, so a wrong fusion or a missing bias would show in the parity.
"""
import numpy as np
import onnx
import pytest
import torch

from mmeff.deploy.export import ExportOptions, export
from mmeff.deploy.onnx_check import ort_session, run_ort
from mmeff.deploy.parts import make_part
from mmeff.models.zoo import build_backbone, build_classifier
from mmeff.testing import randomize_

pytestmark = pytest.mark.usefixtures('one_thread')

SMALLEST = ['efficientformer_l1', 'efficientformerv2_s0', 'efficientvit_m0']


@pytest.mark.parametrize('name', SMALLEST)
def test_onnx_224_parity(name, tmp_path):
    model = randomize_(build_classifier(name))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(x).numpy()
    report = export(make_part(model), str(tmp_path / name), ExportOptions(fmt='onnx'))
    print(report.text())
    assert report.ok, report.text()
    assert report.frozen_biases >= 1 and report.violations == []
    assert report.runtime_parity.max_rel <= 1e-4
    ops = {n.op_type for n in onnx.load(report.path).graph.node}
    assert not ops & {'BatchNormalization', 'Dropout', 'Bernoulli'}
    got = run_ort(ort_session(report.path), x.numpy())[0]
    assert got.shape == (1, 1000)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize('name', SMALLEST)
def test_coreml_224_structure(name, tmp_path):
    model = randomize_(build_classifier(name))
    report = export(make_part(model), str(tmp_path / name),
                    ExportOptions(fmt='coreml', fp16=True))
    print(report.text())
    assert report.ok, report.text()
    structure = report.coreml
    assert structure.outside_op_set == [] and structure.forbidden == []
    assert structure.inputs == [('input', (1, 3, 224, 224), 'FLOAT16')]
    assert structure.outputs == [('logits', (1, 1000), 'FLOAT16')]
    assert structure.compute_precision == 'fp16'
    assert structure.op_types['softmax'] >= 1 and structure.op_types['matmul'] >= 2
    assert 'batch_norm' not in structure.op_types and 'upsample_bicubic' not in str(structure)
    (what, parity), = report.extra_parity.items()
    assert parity.max_rel <= 1e-4


def test_dense_backbone_any_size_multi_output(tmp_path):
    """The dense backbone (every stage out) at a non-square size that is not a multiple of 32."""
    backbone = randomize_(build_backbone('efficientformerv2_s0'))
    report = export(make_part(backbone), str(tmp_path / 's0'),
                    ExportOptions(fmt='onnx', input_hw=(200, 296)))
    assert report.ok, report.text()
    assert report.output_names == ['stage0', 'stage1', 'stage2', 'stage3']
    assert [s[1] for s in report.output_shapes] == [32, 48, 96, 176]
    assert report.output_shapes[0][2:] == (50, 74)


def test_dense_efficientformer_512_stays_within_1e4(tmp_path):
    """Regression: ONNX Runtime sums GroupNorm(1, 48) over a 128x128 map in one fp32 pass and
    was off by 2e-4 (relative) on the stride-4 output; the deploy path's StableGroupNorm
    reduces one axis at a time."""
    backbone = build_backbone('efficientformer_l1')
    assert any(isinstance(m, torch.nn.GroupNorm) for m in backbone.modules())
    report = export(make_part(backbone), str(tmp_path / 'l1_512'),
                    ExportOptions(fmt='onnx', input_hw=(512, 512)))
    assert report.ok, report.text()
    assert report.output_shapes[0] == (1, 48, 128, 128)
    assert report.runtime_parity.per_output['stage0']['max_rel'] <= 1e-5
