"""The exported file against the framework's own inference: MMDet's / MMSeg's ``predict``.

The export's built-in checks compare the file with the same part run eagerly (the part's own
post-processing included). This module closes the loop: a toy scene
(:func:`mmeff.datasets.toy_data.toy_image`) goes through the unfused model's ``predict`` (the
code a user's test script runs) and through the exported file in ONNX Runtime (CoreML: the
torch.export graph that coremltools converted, as CoreML itself runs on macOS only), and the
predictions are compared — detections as matched sets (:class:`DetectionParity`), semantic
segmentation as the share of pixels whose argmax label agrees plus the logits' relative error.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mmeff.datasets.toy_data import toy_image
from mmeff.deploy.detectors import compare_detections, mmdet_predictions
from mmeff.deploy.export import ExportReport
from mmeff.deploy.onnx_check import ort_session, run_ort
from mmeff.deploy.parts import data_normalisation

#: semantic segmentation: argmax labels agree on at least this share of pixels, logits within
#: this relative error (max |diff| / max |ref|), exported file vs MMSeg's predict
SEG_TOLERANCE = dict(label_agreement=0.999, logits_rel=1e-4)
#: what runs the exported model in the framework comparison, per format
RUNNERS = {'onnx': 'ONNX Runtime', 'coreml': 'the graph converted to CoreML (torch.export)'}


@dataclass
class SegmentationParity:
    """Exported per-pixel logits vs MMSeg's ``predict`` (seg_logits and pred_sem_seg)."""
    label_agreement: float
    logits_rel: float

    def ok(self, tolerance: float = 0.0) -> bool:
        return (self.label_agreement >= SEG_TOLERANCE['label_agreement']
                and self.logits_rel <= SEG_TOLERANCE['logits_rel'])

    def text(self) -> str:
        return (f'argmax labels agree on {100 * self.label_agreement:.3f}% of pixels, logits max '
                f'rel {self.logits_rel:.2e} (tolerance: >= '
                f"{100 * SEG_TOLERANCE['label_agreement']:g}%, <= {SEG_TOLERANCE['logits_rel']:g})")


def toy_inputs(model: nn.Module, kind: str, hw: Tuple[int, int],
               seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(pixels, normalised) (1, 3, H, W) float tensors of a toy scene, in the channel order
    the network sees, normalised as the config's data preprocessor does."""
    norm = data_normalisation(model)
    if norm is None:
        raise ValueError(f'{type(model).__name__} has no data preprocessor with mean / std: '
                         'cannot tell how to feed it an image')
    mean, std, layout = norm
    image = toy_image(kind, hw[0], hw[1], seed)
    if layout == 'BGR':
        image = image[..., ::-1]
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / \
        torch.tensor(std).view(1, 3, 1, 1)
    return pixels, normalised


def mmseg_logits(segmentor: nn.Module, image: torch.Tensor) -> np.ndarray:
    """MMSeg's own ``predict`` on a normalised (1, 3, H, W) image: seg_logits (C, H, W)."""
    from mmseg.structures import SegDataSample
    h, w = image.shape[-2:]
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         pad_shape=(h, w), padding_size=[0, 0, 0, 0]))
    with torch.no_grad():
        result = segmentor.predict(image, [sample])[0]
    return result.seg_logits.data.numpy()


@dataclass
class FrameworkReference:
    """The framework's own predictions on a toy scene, taken before the export (the export
    fuses the model in place) and the input to feed the exported file."""
    label: str
    part: str
    feed: np.ndarray
    reference: List[np.ndarray]
    hw: Tuple[int, int]
    score_thr: float = 0.0
    mask_thr: float = 0.5
    max_per_img: int = 0


def framework_reference(model: nn.Module, part: nn.Module, hw: Tuple[int, int],
                        seed: int = 0, fmt: str = 'onnx') -> Optional[FrameworkReference]:
    """MMDet's / MMSeg's predict of the *unfused* ``model`` on a toy scene of size ``hw``,
    for an export ``part`` that has one to compare with (whole detector, segmentor) to
    ``fmt`` ('onnx' or 'coreml'); None otherwise. Call it before
    :func:`~mmeff.deploy.export.export`."""
    kind = getattr(part, 'part', '')
    if kind not in ('detector', 'segmentor') or fmt not in RUNNERS:
        return None
    pixels, normalised = toy_inputs(model, 'coco' if kind == 'detector' else 'ade', hw, seed)
    feed = (pixels if hasattr(part, 'image_type_args') else normalised).numpy()
    if kind == 'segmentor':
        return FrameworkReference(f'{RUNNERS[fmt]} vs MMSeg predict (toy ADE scene)', kind, feed,
                                  [mmseg_logits(model, normalised)], tuple(hw))
    rcnn = getattr(getattr(model, 'roi_head', None), 'test_cfg', None)
    cfg = rcnn if rcnn is not None else model.bbox_head.test_cfg
    return FrameworkReference(
        f'{RUNNERS[fmt]} vs MMDet predict (toy COCO scene)', kind, feed,
        mmdet_predictions(model, normalised), tuple(hw),
        score_thr=float(cfg.get('score_thr', 0.0)),
        mask_thr=float(cfg.get('mask_thr_binary', 0.5)),
        max_per_img=int(cfg.get('max_per_img', 0)))


def add_framework_parity(report: ExportReport, pending: Optional[FrameworkReference]) -> None:
    """Run the exported ONNX file (CoreML: the converted graph, ``report.converted``) on the
    reference's input and add the comparison with the framework's predictions to ``report``
    (nothing for other formats or parts)."""
    if pending is None or report.fmt not in RUNNERS:
        return
    if report.fmt == 'onnx':
        got = run_ort(ort_session(report.path, threads=1), pending.feed)
    else:
        got = report.converted(pending.feed)
    if pending.part == 'detector':
        parity = compare_detections(pending.reference, got, pending.score_thr,
                                    masks_hw=pending.hw, mask_thr=pending.mask_thr,
                                    max_per_img=pending.max_per_img)
    else:
        reference, logits = pending.reference[0], got[0][0]
        agreement = float((logits.argmax(0) == reference.argmax(0)).mean())
        rel = float(np.abs(logits - reference).max() / max(np.abs(reference).max(), 1e-12))
        parity = SegmentationParity(agreement, rel)
    report.extra_parity[pending.label] = parity
