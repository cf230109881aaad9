"""Compressed models: fp16 / int8 ONNX files run by ONNX Runtime within their drift bound,
calibration input errors, CoreML weight compression's spec, the compressed benchmark backends.

The ONNX tests share one fp32 export of EfficientViT-M0 at 64x64 whose BN statistics, layer
scales and bias tables are randomised (mmeff.testing.randomize_), so the logits are far from
the near-constant outputs of a fresh initialisation and a drift shows.
"""
import copy
import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from mmeff.deploy.compress import (MIN_COSINE, CalibrationImages, Normalization,
                                   calibration_images, check_compression, compress_export,
                                   drift, image_files, quantize_onnx, toy_images)
from mmeff.deploy.coreml_compress import (MAX_WEIGHT_ERROR, compress_coreml_export,
                                          compress_mlmodel, kmeans_lut, weight_errors)
from mmeff.deploy.export import ExportOptions, export
from mmeff.deploy.onnx_check import op_histogram, ort_session
from mmeff.deploy.parts import make_part
from mmeff.models.zoo import build_classifier
from mmeff.testing import load_script, randomize_

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HW = (64, 64)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(unfused reference, ExportReport) of a randomised EfficientViT-M0 at 64x64."""
    torch.set_num_threads(1)
    part = make_part(randomize_(build_classifier('efficientvit_m0'))).eval()
    reference = copy.deepcopy(part)  # export fuses ``part`` in place
    report = export(part, str(tmp_path_factory.mktemp('m0') / 'm0'),
                    ExportOptions(input_hw=HW))
    assert report.ok, report.text()
    return reference, report


@pytest.mark.parametrize('mode', ['fp16', 'int8-dynamic'])
def test_onnx_compressed_file_runs_within_its_drift_bound(exported, mode):
    reference, report = exported
    result = compress_export(reference, report, mode, drift_num=8)
    print(result.text())
    assert result.ok and result.drift.min_cosine >= MIN_COSINE[mode], result.text()
    assert result.drift.images == 8 and result.drift.top1_agreement is not None
    graph = onnx.load(result.path)
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    assert inputs == {'input': onnx.TensorProto.FLOAT}  # same feed as the fp32 file
    ops = op_histogram(graph)
    if mode == 'fp16':
        types = {init.data_type for init in graph.graph.initializer
                 if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
        assert types == {onnx.TensorProto.FLOAT16}
        assert result.bytes < 0.6 * result.fp32_bytes
    else:  # MatMul / Gemm weights quantised, convolutions left fp32 (ConvInteger is slow)
        assert ops.get('MatMulInteger') and ops.get('DynamicQuantizeLinear')
        assert not ops.get('ConvInteger') and ops.get('Conv')
    assert result.path in report.text() and 'drift PASS' in report.text()


@pytest.mark.slow
def test_int8_static_from_a_calibration_folder_through_the_tool(exported, tmp_path, capsys):
    """The whole tool path: QDQ per-channel int8 calibrated on a folder of images. The
    checkpoint holds randomised BN statistics (a fresh initialisation's near-constant logits,
    different in every process, would make the drift figure noise)."""
    from mmeff.datasets.toy_data import make_imagenet
    make_imagenet(tmp_path / 'calib', num_train=6, num_val=1, size=(64, 64))
    checkpoint = tmp_path / 'm0.pth'
    torch.save(exported[0].classifier.state_dict(), checkpoint)
    tool = load_script(os.path.join(ROOT, 'tools', 'export.py'))
    out = tmp_path / 'm0.onnx'
    code = tool.main(['efficientvit_m0', str(checkpoint), '--format', 'onnx',
                      '--shape', *map(str, HW),
                      '--out', str(out), '--quantize', 'int8-static', '--calib-dir',
                      str(tmp_path / 'calib'), '--calib-num', '4', '--drift-num', '8'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'MinMax calibration on 4 images' in printed and 'drift PASS' in printed
    graph = onnx.load(str(tmp_path / 'm0_int8-static.onnx'))
    ops = op_histogram(graph)
    assert ops.get('QuantizeLinear') and ops.get('DequantizeLinear')
    inits = {i.name: i for i in graph.graph.initializer}
    per_channel = [n for n in graph.graph.node if n.op_type == 'DequantizeLinear'
                   and inits.get(n.input[0]) is not None
                   and inits[n.input[0]].data_type == onnx.TensorProto.INT8
                   and len(onnx.numpy_helper.to_array(inits[n.input[1]]).shape) == 1]
    assert per_channel  # int8 weights with one scale per output channel


def test_drift_report_fails_on_a_different_model(exported):
    """The bound can fail: the fp32 file against a model with other weights."""
    reference, report = exported
    other = make_part(randomize_(build_classifier('efficientvit_m0'), seed=1)).eval()
    images = toy_images(4, HW, Normalization())
    session = ort_session(report.path, threads=1)
    same = drift(reference, session, images, batch=1, task='classifier')
    wrong = drift(other, session, images, batch=1, task='classifier')
    assert same.min_cosine > 0.99999 and same.top1_agreement == 1.0
    assert wrong.min_cosine < MIN_COSINE['int8-static']


def test_segmentor_drift_has_argmax_agreement_and_miou():
    class Seg(nn.Module):
        def forward(self, x):
            return (x[:, :2],)
    images = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)

    class Flipped:  # an ONNX Runtime session's run(): class 0 and 1 swapped on row 0
        def get_inputs(self):
            return [type('I', (), {'name': 'input'})]

        def run(self, _, feed):
            out = feed['input'][:, :2].copy()
            out[:, :, 0] = out[:, ::-1, 0]
            return [out]
    result = drift(Seg(), Flipped(), images, batch=1, task='segmentor')
    assert result.pixel_agreement == pytest.approx(7 / 8)
    assert 0.5 < result.miou < 1.0 and result.top1_agreement is None


def test_calibration_images_and_preprocessing(tmp_path):
    from mmengine.model import ImgDataPreprocessor
    from PIL import Image
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (tmp_path / f'c{i}').mkdir()
        Image.new('RGB', (40, 30), colour).save(tmp_path / f'c{i}' / 'x.png')
    (tmp_path / 'notes.txt').write_text('not an image')
    holder = nn.Module()
    holder.data_preprocessor = ImgDataPreprocessor(mean=(10., 20., 30.), std=(2., 4., 5.))
    norm = Normalization.of_model(holder)
    assert norm == Normalization((10., 20., 30.), (2., 4., 5.))
    assert Normalization.of_model(nn.Linear(2, 2)) == Normalization()  # ImageNet's
    images = calibration_images(str(tmp_path), 2, (16, 24), norm)
    assert images.shape == (2, 3, 16, 24)  # spread: the first and the last class folder
    np.testing.assert_allclose(images[0, :, 0, 0], [(255 - 10) / 2, -20 / 4, -30 / 5])
    np.testing.assert_allclose(images[1, :, 0, 0], [-10 / 2, -20 / 4, (255 - 30) / 5])
    reader = CalibrationImages(images, batch=1)
    assert [reader.get_next()['input'].shape for _ in range(2)] == [(1, 3, 16, 24)] * 2
    assert reader.get_next() is None


@pytest.mark.parametrize('missing, message', [(True, 'does not exist'),
                                               (False, 'holds no image files')])
def test_bad_calibration_directory_is_a_clear_error(tmp_path, missing, message):
    folder = tmp_path / 'missing' if missing else tmp_path
    (tmp_path / 'a.txt').write_text('not an image')
    with pytest.raises(ValueError, match=message):
        image_files(str(folder))
    with pytest.raises(ValueError, match='--calib-dir'):
        check_compression('onnx', ['fp16', 'int8-static'], str(folder))


@pytest.mark.parametrize('args, message', [
    (['--format', 'onnx', '--quantize', 'int8-static', '--calib-dir', 'no/such/dir'],
     "calibration directory 'no/such/dir' does not exist"),
    (['--format', 'coreml', '--quantize', 'int8-static'], 'applies to --format onnx'),
    (['--format', 'onnx', '--quantize', 'palettize-4'], 'applies to --format coreml'),
    (['--format', 'onnx', '--quantize', 'fp16', '--calib-dir', '.'], 'only used by'),
    (['--format', 'onnx', '--calib-num', '0'], '--calib-num and --drift-num must be'),
])
def test_tool_refuses_bad_compression_requests_with_exit_2(tmp_path, capsys, args, message):
    tool = load_script(os.path.join(ROOT, 'tools', 'export.py'))
    assert tool.main(['efficientvit_m0', '--out', str(tmp_path / 'x')] + args) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was exported


def test_int8_static_needs_calibration(tmp_path):
    with pytest.raises(ValueError, match='needs calibration images'):
        quantize_onnx(str(tmp_path / 'model.onnx'), 'int8-static')


# ----------------------------------------------------------------------------------- CoreML
def test_kmeans_lut_recovers_clustered_values():
    rng = np.random.default_rng(0)
    centres = np.array([-1.0, -0.25, 0.5, 2.0], np.float32)
    noisy = rng.choice(centres, size=(64, 64)) + rng.normal(0, 1e-3, (64, 64))
    lut, index = kmeans_lut(2)(noisy.astype(np.float32))  # Lloyd's path: 4096 distinct values
    np.testing.assert_allclose(np.sort(lut), centres, atol=1e-3)
    np.testing.assert_allclose(lut[index].reshape(noisy.shape), noisy, atol=5e-3)
    exact = rng.choice(centres[:3], size=(8, 8)).astype(np.float32)  # fewer values than 2^n
    lut, index = kmeans_lut(2)(exact)
    np.testing.assert_array_equal(lut[index].reshape(exact.shape), exact)


@pytest.fixture(scope='module')
def mlpackage(tmp_path_factory):
    """A small ML Program with two compressible weights (conv 64x32x3x3, linear 64x64)."""
    import coremltools as ct
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 64)).eval()
    x = torch.randn(1, 32, 8, 8)
    mlmodel = ct.convert(torch.jit.trace(model, x), inputs=[ct.TensorType(name='input',
                                                                           shape=x.shape)],
                         convert_to='mlprogram', minimum_deployment_target=ct.target.iOS16,
                         compute_precision=ct.precision.FLOAT32)
    path = str(tmp_path_factory.mktemp('coreml') / 'small.mlpackage')
    mlmodel.save(path)
    return path


@pytest.mark.parametrize('mode, op', [('int8-linear', 'constexpr_affine_dequantize'),
                                      ('palettize-4', 'constexpr_lut_to_dense')])
def test_coreml_compression_spec_has_the_compressed_weight_ops(mlpackage, mode, op):
    out = mlpackage.replace('.mlpackage', f'_{mode}.mlpackage')
    report = compress_coreml_export(mlpackage, mode, 'iOS16', out)
    print(report.text())
    assert report.op_types.get(op) == 2 and report.compressed_ops == 2
    assert report.ok and not report.outside_op_set
    assert len(report.weight_errors) == 2, report.weight_errors  # the conv's and the linear's
    assert 0 < max(report.weight_errors.values()) <= MAX_WEIGHT_ERROR[mode]
    assert report.bytes < (0.35 if mode == 'int8-linear' else 0.2) * report.source_bytes
    assert 'predictions need macOS' in report.text()


def test_coreml_weight_error_sees_a_changed_weight(mlpackage):
    import coremltools as ct
    original = ct.models.MLModel(mlpackage, skip_model_load=True)
    compressed = compress_mlmodel(original, 'palettize-8')
    assert max(weight_errors(original, compressed).values()) < 0.03
    coarse = compress_mlmodel(original, 'palettize-4')
    assert max(weight_errors(original, coarse).values()) > \
        max(weight_errors(original, compressed).values())


# -------------------------------------------------------------------------------- benchmark
def test_compressed_benchmark_backends_run(toys):
    from mmeff.benchmark.timer import COMPRESSED_ORT, measure, prepare
    x = torch.randn(1, 3, 64, 64)
    model = randomize_(toys.classifier()).eval()
    with torch.no_grad():
        expected = model(x).numpy()
    for backend in COMPRESSED_ORT:
        fresh = toys.classifier()
        fresh.load_state_dict(model.state_dict())
        prepared = prepare(backend, fresh, x)
        got = prepared()[0]
        cosine = float((got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected))
        assert cosine > MIN_COSINE[backend[len('onnxruntime-'):]], backend
        assert prepared.note and measure(prepared, warmup=1, runs=2, clock='cpu').runs == 2
