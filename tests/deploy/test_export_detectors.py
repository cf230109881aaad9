"""Whole detectors (NMS in the graph) and image inputs: the exported files against MMDet's /
MMSeg's own predict, the CoreML specs, the refusals.

Weights are random but perturbed (``randomize_``), so scores spread and NMS has work to do;
inputs are the toy scenes of :mod:`mmeff.datasets.toy_data` at 128x128 (the smallest size at
which every level of the toy configs' pyramids exists).
"""
import numpy as np
import pytest
import torch

from mmeff.deploy.detectors import (MaskRCNNPart, RetinaNetPart, batched_nms,
                                    compare_detections, mmdet_predictions, nms_padded,
                                    roi_align_levels)
from mmeff.deploy.export import ExportOptions, export
from mmeff.deploy.framework_parity import mmseg_logits, toy_inputs
from mmeff.deploy.onnx_check import ort_session, run_ort
from mmeff.deploy.parts import PixelInputPart, make_part, prepare_part
from mmeff.models.loading import load_model
from mmeff.testing import randomize_, sharpen_roi_classifier

from .test_export_dense import (MASK_RCNN_L1, RETINANET_M0, SEMANTIC_FPN_S0, _config,
                               export_tool)

pytestmark = pytest.mark.usefixtures('one_thread')
HW = (128, 128)


def _built(config: str) -> torch.nn.Module:
    """The config's model with seeded default init (randomize_ leaves conv / linear weights
    as built): otherwise the weights, and so the detections every check below compares,
    depend on what the process drew from the global generator before (one combined run failed
    both Mask R-CNN whole-detector tests, which passed alone and in the next runs)."""
    torch.manual_seed(0)
    return load_model(config)


def _model(tmp_path, text, name, seed=5):
    return randomize_(_built(_config(tmp_path, text, name)), seed=seed)


def _tool(tmp_path, capsys, text, name, *args):
    """tools/export.py on a config + a checkpoint of perturbed weights; (code, printed, model)."""
    config = _config(tmp_path, text, name)
    model = sharpen_roi_classifier(randomize_(_built(config), seed=5))
    checkpoint = tmp_path / f'{name}.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    code = export_tool.main([config, str(checkpoint), '--shape', *map(str, HW),
                             '--out', str(tmp_path / name), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err, model


# ------------------------------------------------------------------------ the NMS pieces
def test_batched_nms_equals_mmcv_including_empty_input():
    from mmcv.ops import batched_nms as mmcv_batched_nms
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=gen) * 40], 1)
    scores = torch.rand(300, generator=gen)
    labels = torch.randint(0, 4, (300,), generator=gen)
    _, expected = mmcv_batched_nms(boxes, scores, labels, dict(type='nms', iou_threshold=0.5))
    got = batched_nms(boxes, scores, labels, 0.5)
    assert 0 < len(got) < 300 and torch.equal(got, expected)
    assert batched_nms(boxes[:0], scores[:0], labels[:0], 0.5).numel() == 0


def test_nms_padded_equals_filter_then_batched_nms():
    """The static-shape form (invalid candidates as sentinels) keeps what MMDet keeps: the
    valid candidates' batched_nms, the best ``limit``; high-scoring invalid candidates (a
    size filter) suppress nothing; nothing valid gives nothing."""
    gen = torch.Generator().manual_seed(2)
    xy = torch.rand(400, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(400, 2, generator=gen) * 40], 1)
    scores = torch.rand(400, generator=gen)
    labels = torch.randint(0, 3, (400,), generator=gen)
    valid = torch.logical_and(scores > 0.3, torch.rand(400, generator=gen) > 0.2)
    index = valid.nonzero()[:, 0]
    expected = index[batched_nms(boxes[index], scores[index], labels[index], 0.5)]
    assert 30 < len(expected)
    kept = nms_padded(boxes, scores, labels, valid, 3, 0.5, 1000)
    assert torch.equal(kept.dynamic, expected)
    n = len(expected)  # padded to the limit; the padding is marked
    assert torch.equal(kept.index[:n], expected) and kept.real.tolist() == [True] * n + \
        [False] * (1000 - n)
    assert torch.equal(nms_padded(boxes, scores, labels, valid, 3, 0.5, 20).dynamic,
                       expected[:20])
    none = nms_padded(boxes, scores, labels, valid & False, 3, 0.5, 20)
    assert none.dynamic.numel() == 0 and not none.real.any() and none.index.shape == (20,)


def test_nms_graph_converts_to_coreml_with_run_time_sized_outputs():
    """The spec check of a detection graph: NMS inside as non_maximum_suppression, outputs
    whose first dimension is decided at run time (-1), int32 labels; the converted graph, as
    the export runs it, returns N = 0 for an input without detections."""
    import coremltools as ct

    from mmeff.deploy.coreml_check import inspect_mlprogram
    from mmeff.deploy.export import _coreml_outputs, runnable

    class Tiny(torch.nn.Module):
        def forward(self, x):
            boxes = torch.cat([x[0, 0, :, :2] * 50, x[0, 0, :, :2] * 50 + 8], 1)
            scores, labels = x[0, 0, :, 2].sigmoid(), (x[0, 0, :, 3] > 0).long()
            keep = nms_padded(boxes, scores, labels, scores > 0.2, 2, 0.5, 10).dynamic
            return boxes[keep], scores[keep], labels[keep]

    x = torch.rand(1, 1, 32, 4)
    names = ['boxes', 'scores', 'labels']
    program = torch.export.export(Tiny(), (x,), strict=False).run_decompositions({})
    mlmodel = ct.convert(program, inputs=[ct.TensorType(name='input', shape=x.shape)],
                         outputs=_coreml_outputs(ct, names, list(Tiny()(x))),
                         convert_to='mlprogram', minimum_deployment_target=ct.target.iOS16,
                         compute_precision=ct.precision.FLOAT32)
    spec = inspect_mlprogram(mlmodel, ct.target.iOS16)
    assert spec.outputs == [('boxes', (-1, 4), 'FLOAT32'), ('scores', (-1,), 'FLOAT32'),
                            ('labels', (-1,), 'INT32')]
    assert spec.op_types.get('non_maximum_suppression') == 1 and not spec.outside_op_set
    with torch.no_grad():
        run = runnable(program)
        assert run(x)[0].shape[0] > 1  # detections
        nothing = torch.cat([x[..., :2], torch.full_like(x[..., 2:3], -9), x[..., 3:]], -1)
        assert [tuple(t.shape) for t in run(nothing)] == [(0, 4), (0,), (0,)]


def test_roi_align_levels_equals_mmdet_roi_extractor():
    """torchvision's RoIAlign (aligned, the config's sampling ratio) and the matrix-product
    one at MMDet's level rule equal MMDet's SingleRoIExtractor (MMCV's RoIAlign), as Mask
    R-CNN's config builds it."""
    from mmdet.registry import MODELS
    extractor = MODELS.build(dict(type='SingleRoIExtractor', out_channels=8,
                                  roi_layer=dict(type='RoIAlign', output_size=7,
                                                 sampling_ratio=0),
                                  featmap_strides=[4, 8, 16, 32]))
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 8, 512 // s, 512 // s, generator=gen) for s in (4, 8, 16, 32)]
    size = torch.exp(torch.empty(80, 1).uniform_(np.log(8), np.log(505), generator=gen))
    size = size * torch.empty(80, 2).uniform_(0.9, 1.0, generator=gen)
    xy = torch.rand(80, 2, generator=gen) * (510 - size)
    rois = torch.cat([torch.zeros(80, 1), xy, xy + size], 1)
    assert len(extractor.map_roi_levels(rois, 4).unique()) == 4  # every level is used
    with torch.no_grad():
        expected = extractor(feats, rois)
        got = roi_align_levels(extractor, feats, rois)
        matrix = roi_align_levels(extractor, feats, rois, matrix=True)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    assert torch.allclose(matrix, expected, rtol=0, atol=1e-5)


def test_detection_comparison_fails_on_a_moved_box_or_a_lost_detection():
    boxes = np.array([[10, 10, 50, 50], [60, 60, 90, 100]], np.float32)
    ref = [boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2])]
    assert compare_detections(ref, ref).ok()
    moved = [boxes + np.array([[0, 0, 0, 0.5]], np.float32)] + ref[1:]
    assert not compare_detections(ref, moved).ok()
    lost = [boxes[:1], ref[1][:1], ref[2][:1]]
    parity = compare_detections(ref, lost, score_thr=0.05)
    assert parity.unmatched_confident == 1 and not parity.ok()
    # at the score threshold a detection may drop out (a rounding difference decides)
    ref_low = [boxes, np.array([0.9, 0.0505], np.float32), ref[2]]
    assert compare_detections(ref_low, lost, score_thr=0.05).ok()
    swapped = [boxes[::-1], ref[1][::-1], ref[2][::-1]]  # order does not matter
    assert compare_detections(ref, swapped).ok()


def test_detections_swapped_at_the_cut_are_not_paired_as_a_moved_box():
    """Two different detections of one label, each in one list only because a rounding
    difference decided the cut (score threshold, then max_per_img), must not be paired: greedy
    matching did, and a fused export could then read as a box hundreds of px off."""
    sure = np.array([[10, 10, 50, 50]], np.float32)
    ref = [np.concatenate([sure, [[20, 20, 60, 60]]]).astype(np.float32),
           np.array([0.9, 0.0504], np.float32), np.array([1, 2])]
    got = [np.concatenate([sure, [[200, 250, 285, 325]]]).astype(np.float32),
           np.array([0.9, 0.0503], np.float32), np.array([1, 2])]
    parity = compare_detections(ref, got, score_thr=0.05)
    assert parity.ok(), parity.text()
    assert parity.matched == 1 and parity.max_box_px == 0.0
    full = [np.array([0.9, 0.3004], np.float32), np.array([0.9, 0.3003], np.float32)]
    parity = compare_detections([ref[0], full[0], ref[2]], [got[0], full[1], got[2]],
                                score_thr=0.05, max_per_img=2)
    assert parity.ok(), parity.text()
    # a confident detection that moved is still paired and still fails
    confident = compare_detections([ref[0], ref[1] * 0 + 0.9, ref[2]],
                                   [got[0], got[1] * 0 + 0.9, got[2]], score_thr=0.05)
    assert not confident.ok() and confident.max_box_px > 200


# ------------------------------------------------------------------- ONNX, MMDet's predict
@pytest.mark.slow
def test_retinanet_whole_onnx_matches_mmdet_predict(tmp_path, capsys):
    code, printed, model = _tool(tmp_path, capsys, RETINANET_M0, 'retina', '--format', 'onnx')
    assert code == 0, printed
    assert 'onnx (fp32) of the detector' in printed and 'NonMaxSuppression:1' in printed
    assert 'ONNX Runtime vs MMDet predict (toy COCO scene)' in printed
    assert 'parity PASS' in printed

    # independently: the file in ONNX Runtime vs MMDet's own predict of the checkpoint's model
    _, image = toy_inputs(model, 'coco', HW)
    reference = mmdet_predictions(model, image)
    got = run_ort(ort_session(str(tmp_path / 'retina.onnx'), threads=1), image.numpy())
    assert [o.shape for o in got] == [(len(reference[1]), 4), (len(reference[1]),),
                                      (len(reference[1]),)]
    assert got[2].dtype == np.int64 and 10 <= len(got[1]) <= 100  # max_per_img = 100
    parity = compare_detections(reference, got, 0.05, max_per_img=100)
    assert parity.ok(), parity.text()
    assert parity.matched == len(reference[1]) and parity.max_box_px <= 1e-3


@pytest.mark.slow
def test_mask_rcnn_whole_onnx_matches_mmdet_predict(tmp_path, capsys):
    code, printed, model = _tool(tmp_path, capsys, MASK_RCNN_L1, 'mrcnn', '--format', 'onnx')
    assert code == 0, printed
    assert 'masks [' in printed and 'RoiAlign:' in printed and 'NonMaxSuppression:2' in printed
    assert 'ONNX Runtime vs MMDet predict' in printed and 'parity PASS' in printed
    # the closing tolerance line must not claim 1e-4 relative for the detection rows
    assert 'framework rows: their own tolerances' in printed

    _, image = toy_inputs(model, 'coco', HW)
    reference = mmdet_predictions(model, image)
    got = run_ort(ort_session(str(tmp_path / 'mrcnn.onnx'), threads=1), image.numpy())
    n = len(reference[1])
    assert n >= 10 and got[3].shape == (n, 28, 28) and reference[3].shape == (n,) + HW
    parity = compare_detections(reference, got, 0.05, masks_hw=HW, max_per_img=100)
    assert parity.ok(), parity.text()
    assert parity.matched == n and parity.min_mask_agreement >= 0.99


def test_semantic_fpn_onnx_matches_mmseg_predict(tmp_path, capsys):
    code, printed, model = _tool(tmp_path, capsys, SEMANTIC_FPN_S0, 'fpn', '--format', 'onnx',
                                 '--image-input')
    assert code == 0, printed
    assert 'ONNX Runtime vs MMSeg predict (toy ADE scene)' in printed
    assert 'mean/std inside the graph' in printed and 'parity PASS' in printed

    pixels, image = toy_inputs(model, 'ade', HW)
    expected = mmseg_logits(model, image)
    got = run_ort(ort_session(str(tmp_path / 'fpn.onnx'), threads=1), pixels.numpy())[0][0]
    assert (got.argmax(0) == expected.argmax(0)).mean() >= 0.999
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_whole_detector_is_what_auto_exports(tmp_path):
    retina = _model(tmp_path, RETINANET_M0, 'retina')
    assert isinstance(make_part(retina), RetinaNetPart)
    assert make_part(retina, 'detector-head').part == 'detector-head'
    mrcnn = _model(tmp_path, MASK_RCNN_L1, 'mrcnn')
    part = make_part(mrcnn)
    assert isinstance(part, MaskRCNNPart)
    assert (part.rpn_nms_pre, part.rpn_iou, part.rpn_max) == (1000, 0.7, 1000)  # test_cfg.rpn
    assert (part.score_thr, part.iou, part.max_per_img) == (0.05, 0.5, 100)    # .rcnn


# ---------------------------------------------------------------------------- CoreML specs
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]  # MMDet's COCO configs


def _check_image_input(spec):
    """An RGB ImageType whose scale / bias are the config's mean / std."""
    assert spec.inputs == [('input', (1, 3) + HW, 'IMAGE_RGB')]
    image = spec.image_inputs['input']
    scale = 3 / sum(STD)
    assert image['color'] == 'RGB' and image['scale'] == pytest.approx(scale, rel=1e-6)
    assert image['bias'] == pytest.approx([-m * scale for m in MEAN], rel=1e-6)


def _coreml_spec(path):
    import coremltools as ct

    from mmeff.deploy.coreml_check import inspect_mlprogram
    return inspect_mlprogram(ct.models.MLModel(str(path), skip_model_load=True),
                             ct.target.iOS16)


@pytest.mark.slow
def test_retinanet_whole_coreml_nms_inside_matches_mmdet_predict(tmp_path, capsys):
    """tools/export.py --format coreml: an ML Program with the image input, NMS inside and
    N detections out; the converted graph matches MMDet's predict on the toy scene."""
    code, printed, model = _tool(tmp_path, capsys, RETINANET_M0, 'retina', '--format',
                                 'coreml')
    assert code == 0, printed
    assert 'coreml (fp32) of the detector' in printed
    assert 'the graph converted to CoreML (torch.export) vs MMDet predict (toy COCO scene): ' \
        '100 of 100 detections matched' in printed and 'parity PASS' in printed
    spec = _coreml_spec(tmp_path / 'retina.mlpackage')
    _check_image_input(spec)
    assert spec.outputs == [('boxes', (-1, 4), 'FLOAT32'), ('scores', (-1,), 'FLOAT32'),
                            ('labels', (-1,), 'INT32')]
    assert spec.op_types['non_maximum_suppression'] == 1 and spec.op_types['topk'] == 5
    assert spec.outside_op_set == [] and 'IMAGE_RGB' in printed


@pytest.mark.slow
def test_mask_rcnn_whole_coreml_matches_mmdet_predict(tmp_path, capsys):
    """Mask R-CNN to CoreML whole: RPN NMS, matrix-product RoIAlign, RoI-head NMS, masks."""
    code, printed, model = _tool(tmp_path, capsys, MASK_RCNN_L1, 'mrcnn', '--format',
                                 'coreml')
    assert code == 0, printed
    assert 'vs MMDet predict (toy COCO scene): 100 of 100 detections matched' in printed
    assert 'masks agree' in printed and 'parity PASS' in printed
    spec = _coreml_spec(tmp_path / 'mrcnn.mlpackage')
    _check_image_input(spec)
    assert spec.outputs == [('boxes', (-1, 4), 'FLOAT32'), ('scores', (-1,), 'FLOAT32'),
                            ('labels', (-1,), 'INT32'), ('masks', (-1, 28, 28), 'FLOAT32')]
    assert spec.op_types['non_maximum_suppression'] == 2 and spec.outside_op_set == []


def test_image_input_normalises_like_the_data_preprocessor(tmp_path):
    """The pixel graph equals the tensor graph on the preprocessor's output; CoreML's view
    (ImageType scale/bias, then the per-channel remainder) as well."""
    model = _model(tmp_path, SEMANTIC_FPN_S0, 'fpn')
    part = prepare_part(model, 'segmentor', 'onnx', image_input=True)
    pixels, normalised = toy_inputs(model, 'ade', (64, 64))
    view = part.coreml_view()
    assert not view.uniform  # ADE's stds differ per channel: the remainder is in the graph
    with torch.no_grad():
        expected = part.inner(normalised)[0]
        assert torch.allclose(part(pixels)[0], expected, atol=1e-4)
        assert torch.allclose(view(view.prescale(pixels))[0], expected, atol=1e-4)


# ------------------------------------------------------------------------------ refusals
def _without_test_cfg(text):
    return text + 'model.update(test_cfg=None)\n'


@pytest.mark.parametrize('args, text, message', [
    (['--format', 'onnx', '--part', 'detector'], _without_test_cfg(RETINANET_M0),
     'has no test_cfg'),
    (['--format', 'onnx', '--part', 'detector', '--batch', '2'], RETINANET_M0,
     'one image of one size'),
    (['--format', 'coreml', '--fp16'], MASK_RCNN_L1, 'CoreML in fp32 only'),
    (['--format', 'onnx', '--part', 'detector'], SEMANTIC_FPN_S0,
     '--part detector needs an MMDet detector'),
], ids=['no-test-cfg', 'batch-2', 'coreml-fp16', 'segmentor'])
def test_detector_refusals_exit_2(tmp_path, capsys, args, text, message):
    config = _config(tmp_path, text, 'cfg')
    code = export_tool.main([config, '--out', str(tmp_path / 'x'), '--shape', '128', '128']
                            + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / 'x.onnx').exists() and not (tmp_path / 'x.mlpackage').exists()


@pytest.mark.parametrize('text, attr, head, fallback', [
    (MASK_RCNN_L1, 'roi_head', 'CascadeRoIHead', 'detector-neck'),
    (MASK_RCNN_L1, 'roi_head.mask_head', 'HTCMaskHead', 'detector-neck'),
    (RETINANET_M0, 'bbox_head', 'ATSSHead', 'detector-head'),  # centerness: score factors
])
def test_heads_that_are_not_exported_whole_are_refused(tmp_path, text, attr, head, fallback):
    """A head renamed to a type the parts do not reproduce (same modules, other semantics)."""
    model = load_model(_config(tmp_path, text, 'det'))
    owner, _, leaf = attr.rpartition('.')
    module = getattr(model.roi_head if owner else model, leaf)
    module.__class__ = type(head, (type(module),), {})
    with pytest.raises(ValueError, match=f'{head}.*--part detector-'):
        make_part(model, 'detector')
    assert make_part(model).part == fallback  # auto falls back to what can be exported


def test_image_input_needs_a_data_preprocessor(tmp_path, capsys):
    code = export_tool.main(['efficientvit_m0', '--format', 'onnx', '--image-input',
                             '--out', str(tmp_path / 'x')])
    assert code == 2 and '--image-input needs the mean and std' in capsys.readouterr().err



def test_coreml_export_flags_a_detector_program_without_its_nms(toys, tmp_path):
    """The structural check fails when the ML Program lacks the NMS ops the part declares
    (here a classifier posing as one: no NMS converted)."""
    from mmeff.deploy.parts import ClassifierPart
    part = ClassifierPart(toys.classifier())
    part.coreml_ops = {'non_maximum_suppression': 1}
    report = export(part, str(tmp_path / 'c'), ExportOptions(fmt='coreml', input_hw=(64, 64)))
    assert not report.ok
    assert '1 x non_maximum_suppression expected in the ML Program, 0 found' in report.text()
