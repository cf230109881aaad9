"""Dense-prediction exports from real MMSeg / MMDet configs built on mmeff backbones.

The configs inherit the MMSeg/MMDet base models (``mmseg::`` / ``mmdet::``) and swap in our
backbones, exactly as the project's configs do; necks and heads are slimmed (64 channels) to
keep the tests quick. Checkpoints are random weights saved to a temporary file, so the tool's
checkpoint path is exercised too.
"""
import os

import numpy as np
import pytest
import torch

from mmeff.deploy.deploy_path import ChannelAffine
from mmeff.deploy.export import ExportOptions, export
from mmeff.models.loading import load_model
from mmeff.deploy.onnx_check import ort_session, run_ort
from mmeff.deploy.parts import make_part, prepare_part
from mmeff.testing import load_script, randomize_

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


export_tool = load_script(os.path.join(ROOT, 'tools', 'export.py'))

SEMANTIC_FPN_S0 = """
_base_ = 'mmseg::_base_/models/fpn_r50.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='mmeff.EfficientFormerV2', arch='s0'),
    neck=dict(in_channels=[32, 48, 96, 176], out_channels=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=150))
"""

RETINANET_M0 = """
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='mmeff.EfficientViT', arch='m0'),
    neck=dict(_delete_=True, type='mmeff.EfficientViTFPN', in_channels=[64, 128, 192],
              out_channels=64, num_outs=5, num_extra_trans_convs=1,
              add_extra_convs='on_input'),
    bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=2, num_classes=80))
"""

MASK_RCNN_L1 = """
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='mmeff.EfficientFormer', arch='l1'),
    neck=dict(in_channels=[48, 96, 224, 448], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=64),
                  bbox_head=dict(in_channels=64, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=64),
                  mask_head=dict(in_channels=64, conv_out_channels=64)))
"""


def _config(tmp_path, text, name):
    path = tmp_path / f'{name}.py'
    path.write_text(text)
    return str(path)


def _image(h, w, seed=3):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_semantic_fpn_512_onnx_end_to_end_matches_pytorch(tmp_path, capsys):
    """tools/export.py on an MMSeg config + checkpoint: image -> per-pixel logits at 512x512."""
    config = _config(tmp_path, SEMANTIC_FPN_S0, 'fpn_s0')
    model = randomize_(load_model(config), seed=5)
    checkpoint = tmp_path / 'fpn_s0.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    out = tmp_path / 'fpn_s0.onnx'

    code = export_tool.main([config, str(checkpoint), '--format', 'onnx', '--shape', '512',
                             '512', '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'of the segmentor' in printed and 'seg_logits [1, 150, 512, 512]' in printed
    assert 'parity PASS' in printed and 'graph clean' in printed

    # independent check: the file reproduces the checkpoint's model, run by MMSeg itself
    x = _image(512, 512)
    with torch.no_grad():
        expected = model.encode_decode(x, [dict(img_shape=(512, 512))]).numpy()
    got = run_ort(ort_session(str(out), threads=1), x.numpy())[0]
    assert got.shape == (1, 150, 512, 512)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_semantic_fpn_coreml_structure(tmp_path):
    """CoreML for Vision: an image input whose scale / bias are the config's normalisation."""
    model = randomize_(load_model(_config(tmp_path, SEMANTIC_FPN_S0, 'fpn_s0')))
    part = prepare_part(model, 'auto', 'coreml')
    report = export(part, str(tmp_path / 'seg'), ExportOptions(fmt='coreml', input_hw=(256, 256)))
    assert report.ok, report.text()
    ops = report.coreml.op_types
    assert ops['upsample_bilinear'] >= 1 and 'upsample_bicubic' not in ops
    # the 4 dense output BNs have no conv before them: the deploy path makes them x * s + t,
    # which coremltools fuses into its batch_norm op; every other BN is folded away
    affines = sum(isinstance(m, ChannelAffine) for m in part.modules())
    assert affines == 4 and ops['batch_norm'] == affines
    assert report.coreml.outputs == [('seg_logits', (1, 150, 256, 256), 'FLOAT32')]
    assert report.coreml.inputs == [('input', (1, 3, 256, 256), 'IMAGE_RGB')]
    image = report.coreml.image_inputs['input']  # mmseg fpn_r50: RGB mean / std
    scale = 3 / (58.395 + 57.12 + 57.375)
    assert image['scale'] == pytest.approx(scale, rel=1e-6)
    assert image['bias'] == pytest.approx([-123.675 * scale, -116.28 * scale, -103.53 * scale],
                                          rel=1e-6)


def test_retinanet_backbone_neck_and_raw_head(tmp_path):
    """--part detector-head: the raw head maps (NMS on the host; the CoreML conversion of the
    same network is test_export_detectors' decoded-box test)."""
    model = randomize_(load_model(_config(tmp_path, RETINANET_M0, 'retina_m0')))
    part = make_part(model, 'detector-head')
    assert part.part == 'detector-head'
    report = export(part, str(tmp_path / 'retina'), ExportOptions(input_hw=(256, 256)))
    assert report.ok, report.text()
    names = report.output_names
    assert names[:5] == [f'neck{i}' for i in range(5)]
    assert names[5:] == [f'cls_score{i}' for i in range(5)] + [f'bbox_pred{i}' for i in range(5)]
    shapes = dict(zip(names, report.output_shapes))
    assert shapes['neck0'] == (1, 64, 32, 32) and shapes['neck4'] == (1, 64, 2, 2)  # P3..P7
    assert shapes['cls_score0'] == (1, 9 * 80, 32, 32) and shapes['bbox_pred0'] == (1, 36, 32, 32)
    assert report.runtime_parity.max_rel <= 1e-4
    x = _image(256, 256)
    with torch.no_grad():
        feats = model.extract_feat(x)
        cls_scores, _ = model.bbox_head(feats)
    got = run_ort(ort_session(report.path, threads=1), x.numpy())
    assert np.allclose(got[5], cls_scores[0].numpy(), rtol=0,
                       atol=1e-4 * float(cls_scores[0].abs().max()))


def test_two_stage_detector_exports_backbone_and_neck(tmp_path):
    model = randomize_(load_model(_config(tmp_path, MASK_RCNN_L1, 'mrcnn_l1')))
    with pytest.raises(ValueError, match='two-stage.*--part detector-neck'):
        make_part(model, 'detector-head')
    part = make_part(model, 'detector-neck')
    assert part.part == 'detector-neck'
    report = export(part, str(tmp_path / 'mrcnn'), ExportOptions(input_hw=(224, 320)))
    assert report.ok, report.text()
    assert report.output_names == [f'neck{i}' for i in range(5)]
    assert report.output_shapes[0] == (1, 64, 56, 80)  # P2 at stride 4


def test_backbone_part_of_a_dense_config(tmp_path):
    model = load_model(_config(tmp_path, RETINANET_M0, 'retina_m0'))
    part = make_part(model, 'backbone')
    report = export(part, str(tmp_path / 'bb'), ExportOptions(input_hw=(256, 256)))
    assert report.ok and len(report.output_names) == 3  # EfficientViT: strides 16/32/64


def test_checkpoint_that_does_not_fit_the_config_is_refused(tmp_path):
    config = _config(tmp_path, RETINANET_M0, 'retina_m0')
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': {'backbone.nonsense': torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match='does not fit the model'):
        load_model(config, str(bad))


def test_config_without_an_mmeff_backbone_is_refused(tmp_path):
    config = _config(tmp_path, "_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'\n", 'r50')
    code = export_tool.main([config, '--format', 'onnx', '--out', str(tmp_path / 'r50')])
    assert code == 2
    assert not (tmp_path / 'r50.onnx').exists()


PROJECT_CONFIGS = sorted(
    name for name in os.listdir(os.path.join(ROOT, 'configs'))
    if name.endswith('.py') and name.split('_')[0] in ('semfpn', 'maskrcnn', 'retinanet'))
EXPECTED_PART = {'semfpn': 'segmentor', 'maskrcnn': 'detector', 'retinanet': 'detector'}


@pytest.mark.parametrize('name', PROJECT_CONFIGS)
def test_every_project_config_has_an_export_part(name):
    """The repository's own dense configs build without weights and map to their part."""
    model = load_model(os.path.join(ROOT, 'configs', name))
    assert make_part(model).part == EXPECTED_PART[name.split('_')[0]]


def test_project_semantic_fpn_config_exports(tmp_path):
    model = load_model(os.path.join(ROOT, 'configs', 'semfpn_v2s0_ade20k.py'))
    report = export(make_part(randomize_(model)), str(tmp_path / 'semfpn'),
                    ExportOptions(input_hw=(256, 320)))
    assert report.ok, report.text()
    assert report.output_shapes == [(1, 150, 256, 320)]
