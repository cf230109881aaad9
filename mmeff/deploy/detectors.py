"""Whole detectors as traceable graphs: MMDet's test-time post-processing, NMS included.

MMDet's ``predict`` decodes, thresholds and suppresses with Python control flow that a tracer
cannot follow (``if inds.numel() > 0``, ``min(topk, num_valid)``). The parts here compute the
same results with tensor ops only, reusing MMDet's own pieces where they trace (the heads, the
bbox coder's ``decode``, the prior generators, ``map_roi_levels``) and replacing the rest by
equivalents that export:

* per level, the top ``nms_pre`` (anchor, class) scores are taken *before* the score threshold
  (MMDet thresholds first, then takes the top ``nms_pre`` of what is left: the same set, but
  with a static ``k``);
* every shape is static up to the NMS (what CoreML's converter needs): candidates that MMDet
  drops before its NMS (under ``score_thr``, smaller than ``min_bbox_size``) are not removed
  but made *sentinels* (:func:`nms_padded`): one shared unit box in a group of their own, score
  -1. Sentinels never suppress a real candidate (their group is moved apart), identical boxes
  suppress each other, so NMS keeps exactly one of them, last (every real score is >= 0, and
  one sentinel is always appended): the kept indices minus the last are MMDet's
  (:func:`nms_padded`); stages after an NMS run on a static padded list (the RoI head on
  ``rpn.max_per_img`` proposals, the mask head on ``max_per_img`` boxes, padding masked) and
  only the outputs have the run-time size N;
* per-class NMS is :func:`batched_nms`: MMCV's coordinate-offset trick (``idxs * (max + 1)``)
  on :func:`torchvision.ops.nms`, which exports to ONNX ``NonMaxSuppression`` and converts to
  CoreML's ``non_maximum_suppression`` (both give the kept indices by score);
* RoI features are computed at every pyramid level and selected by MMDet's level rule
  (:func:`roi_align_levels`): with :func:`torchvision.ops.roi_align` for ONNX (``RoiAlign``;
  torchvision's ``aligned=True`` is MMCV's ``RoIAlign(aligned=True)``, the half-pixel shift),
  with :func:`mmeff.deploy.roi_align.roi_align` (two matrix products, equal to MMCV's) for
  CoreML, which has no RoIAlign converter.

Outputs (batch 1; N is dynamic, at most the config's ``test_cfg.max_per_img``; sorted by score):

    boxes   (N, 4) float  x1, y1, x2, y2 in input-image pixels (clipped to the image)
    scores  (N,)   float  the class score (sigmoid for RetinaNet, softmax for the RoI head)
    labels  (N,)   int64  class index, 0-based, as MMDet's ``pred_instances.labels`` (int32
            in CoreML, which has no 64-bit integers)
    masks   (N, 28, 28) float  Mask R-CNN only: the mask head's sigmoid probabilities for the
            detection's class in its box; paste with :func:`paste_masks` (MMDet's rule:
            bilinear sampling into the box, ``>= rcnn.mask_thr_binary``)

The graph takes the normalised image (as MMDet's data preprocessor gives it) unless it is
exported with an image input (:class:`mmeff.deploy.parts.PixelInputPart`).
"""
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmeff.deploy.part_base import ExportPart, Outputs

DETECTION_OUTPUTS = ('boxes', 'scores', 'labels')
#: dense heads whose test-time path is exactly anchors + sigmoid scores + bbox coder (no score
#: factors such as FCOS's / ATSS's centerness, no points instead of anchors)
ANCHOR_HEADS = ('AnchorHead', 'RetinaHead', 'RetinaSepBNHead')
#: RoI heads' bbox / mask heads with the plain softmax classifier / FCN mask
BBOX_HEADS = ('BBoxHead', 'ConvFCBBoxHead', 'Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead')
MASK_HEADS = ('FCNMaskHead',)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-class NMS as MMCV's ``batched_nms`` computes it (boxes of different ``idxs`` are
    moved apart by ``idxs * (max coordinate + 1)``); returns the kept indices by score.

    The maximum is taken over the boxes and a zero, so that an empty input is an empty output
    in ONNX Runtime as well (ReduceMax of an empty tensor fails); decoded boxes are clipped to
    the image, so the zero changes nothing otherwise.
    """
    from torchvision.ops import nms
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, float(iou_threshold))


class Kept(NamedTuple):
    """What per-group NMS keeps, in two forms (see :func:`nms_padded`)."""
    #: (limit,) candidate indices, the kept ones first by score, then padding (any index)
    index: Tensor
    #: (limit,) bool, which entries of ``index`` are kept candidates
    real: Tensor
    #: (N,) 0 .. N-1, N = the number kept (at most ``limit``): ``index[positions]`` are the
    #: kept indices; N is a run-time size, and nothing computes with it
    positions: Tensor

    @property
    def dynamic(self) -> Tensor:
        """(N,) the kept indices by score."""
        return self.index[self.positions]


def nms_padded(boxes: Tensor, scores: Tensor, groups: Tensor, valid: Tensor,
               num_groups: int, iou_threshold: float, limit: int) -> Kept:
    """The ``valid`` candidates that per-group NMS keeps, by score, the ``limit`` best:
    MMDet's filter-then-:func:`batched_nms` with static shapes around the NMS.

    Invalid candidates become sentinels (module doc): a unit box in group ``num_groups`` with
    score -1, plus one appended sentinel; NMS keeps one sentinel, last. The kept list padded
    to ``limit`` (static: later stages such as the RoI head run on it) and the positions of
    the real ones (for the N-sized outputs): CoreML's converter has no op for arithmetic on a
    run-time size (``min(limit, N)`` in a reshape), so no later shape may depend on N.
    Needs ``scores >= 0`` for the valid candidates (sigmoid / softmax scores).
    """
    num = boxes.shape[0]
    unit = boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    boxes = torch.cat([torch.where(valid[:, None], boxes, unit), unit[None]])
    scores = torch.cat([torch.where(valid, scores, -torch.ones_like(scores)),
                        scores.new_full((1,), -1.0)])
    groups = torch.cat([torch.where(valid, groups, torch.full_like(groups, num_groups)),
                        groups.new_full((1,), num_groups)])
    keep = batched_nms(boxes, scores, groups, iou_threshold)
    index = torch.cat([keep, keep.new_full((limit,), num)])[:limit]
    real = scores[index] >= 0
    kept = keep.narrow(0, 0, keep.shape[0] - 1)[:limit]  # the sentinel is last: cut off
    positions = torch.cumsum(torch.ones_like(kept), 0) - 1
    return Kept(index.clamp(max=num - 1), real, positions)


def _cfg_value(cfg, key: str, what: str):
    value = cfg.get(key) if cfg is not None else None
    if value is None:
        raise ValueError(f'{what} has no {key!r} in its test_cfg; whole-detector export takes '
                         f'its post-processing parameters from the config (add {key}=... to '
                         f'model.test_cfg) or use --part detector-head / detector-neck')
    return value


def _nms_iou(cfg, what: str) -> float:
    nms = _cfg_value(cfg, 'nms', what)
    if nms.get('type', 'nms') != 'nms':
        raise ValueError(f"{what}: test_cfg.nms type {nms.get('type')!r} is not exported; "
                         "only type='nms' (hard NMS, ONNX NonMaxSuppression) is")
    return float(nms['iou_threshold'])


def _size_filter(boxes: Tensor, min_size: float) -> Tensor:
    """MMDet's ``min_bbox_size`` rule: keep boxes wider and taller than ``min_size``."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.logical_and(w > min_size, h > min_size)  # CoreML has no aten.__and__


class WholeDetectorPart(ExportPart):
    """Base of the whole-detector parts: the test_cfg values, the image size, shared steps."""
    part = 'detector'
    #: MIL ops the converted ML Program must hold (the export's structural check)
    coreml_ops: Dict[str, int] = {'non_maximum_suppression': 1}

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def output_names(self, num_outputs: int) -> List[str]:
        return list(DETECTION_OUTPUTS) + ['masks'][:num_outputs - len(DETECTION_OUTPUTS)]

    def compare_outputs(self, reference: Sequence, got: Sequence,
                        names: Sequence[str]) -> 'DetectionParity':
        """Export's parity rule for this part: matched sets (see :func:`compare_detections`)."""
        return compare_detections(reference, got, self.score_thr,
                                  max_per_img=self.max_per_img)

    def for_coreml(self) -> 'WholeDetectorPart':
        """The CoreML form of this part (the same outputs; ops CoreML's converter has)."""
        return self

    @staticmethod
    def _check_batch(image: Tensor) -> None:
        if image.shape[0] != 1:
            raise ValueError(f'whole-detector export takes one image (batch 1), got batch '
                             f'{image.shape[0]}; export with --batch 1')

    @staticmethod
    def _priors(head: nn.Module, maps: Sequence[Tensor]) -> List[Tensor]:
        return head.prior_generator.grid_priors([m.shape[-2:] for m in maps],
                                                dtype=maps[0].dtype, device=maps[0].device)


class RetinaNetPart(WholeDetectorPart):
    """Single-stage anchor head (RetinaNet and other ``AnchorHead`` subclasses with sigmoid
    scores and no score factors): decode, threshold, per-class NMS."""

    def __init__(self, detector: nn.Module):
        super().__init__(detector)
        head = detector.bbox_head
        what = f'{type(detector).__name__}.bbox_head ({type(head).__name__})'
        if type(head).__name__ not in ANCHOR_HEADS or not getattr(head, 'use_sigmoid_cls',
                                                                   False):
            raise ValueError(f'{what}: whole-detector export supports anchor heads with sigmoid '
                             f'classification and no score factors ({", ".join(ANCHOR_HEADS)}); '
                             'use --part detector-head for the raw head outputs')
        cfg = head.test_cfg
        if cfg is None:
            raise ValueError(f'{what} has no test_cfg: the export needs score_thr, nms, '
                             'max_per_img and nms_pre from model.test_cfg')
        self.score_thr = float(cfg.get('score_thr', 0.0))
        self.nms_pre = int(cfg.get('nms_pre', -1))
        self.iou = _nms_iou(cfg, what)
        self.max_per_img = int(_cfg_value(cfg, 'max_per_img', what))
        self.min_bbox_size = float(cfg.get('min_bbox_size', -1))

    def forward(self, image: Tensor) -> Outputs:
        self._check_batch(image)
        head = self.detector.bbox_head
        cls_scores, bbox_preds = head(self.detector.extract_feat(image))[:2]
        priors = self._priors(head, cls_scores)
        num_classes = head.cls_out_channels
        boxes, scores, labels = [], [], []
        for cls_score, bbox_pred, prior in zip(cls_scores, bbox_preds, priors):
            flat = cls_score[0].permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, head.bbox_coder.encode_size)
            k = flat.shape[0] if self.nms_pre <= 0 else min(self.nms_pre, flat.shape[0])
            top, index = flat.topk(k)
            anchor = torch.div(index, num_classes, rounding_mode='floor')
            boxes.append(head.bbox_coder.decode(prior[anchor], deltas[anchor],
                                                max_shape=tuple(image.shape[-2:])))
            scores.append(top)
            labels.append(index - anchor * num_classes)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        valid = scores > self.score_thr
        if self.min_bbox_size >= 0:
            valid = torch.logical_and(valid, _size_filter(boxes, self.min_bbox_size))
        keep = nms_padded(boxes, scores, labels, valid, num_classes, self.iou,
                          self.max_per_img).dynamic
        return boxes[keep], scores[keep], labels[keep]


class MaskRCNNPart(WholeDetectorPart):
    """Two-stage detector (Faster / Mask R-CNN: RPN, ``StandardRoIHead`` with a bbox head and
    an optional FCN mask head): RPN proposals with NMS, RoIAlign, class-wise NMS, masks."""

    def __init__(self, detector: nn.Module):
        super().__init__(detector)
        roi_head, rpn = detector.roi_head, detector.rpn_head
        name = type(detector).__name__
        if type(roi_head).__name__ != 'StandardRoIHead' or not hasattr(rpn, 'prior_generator'):
            raise ValueError(
                f'{name}: whole-detector export supports an RPN + StandardRoIHead (Faster / '
                f'Mask R-CNN), not {type(roi_head).__name__} (cascade and other multi-stage '
                'RoI heads are not exported); use --part detector-neck')
        heads = [(roi_head.bbox_head, BBOX_HEADS)]
        if getattr(roi_head, 'with_mask', False):
            heads.append((roi_head.mask_head, MASK_HEADS))
        for head, supported in heads:
            if type(head).__name__ not in supported or getattr(head, 'custom_cls_channels',
                                                               False):
                raise ValueError(f'{name}: {type(head).__name__} is not exported whole (supported: '
                                 f'{", ".join(supported)}); use --part detector-neck')
        for extractor in self._extractors():
            for layer in extractor.roi_layers:
                if type(layer).__name__ != 'RoIAlign' or getattr(layer, 'pool_mode',
                                                                 'avg') != 'avg':
                    raise ValueError(f'{name}: only RoIAlign (avg pooling) RoI layers are '
                                     f'exported, not {type(layer).__name__}')
        rpn_cfg, rcnn_cfg = rpn.test_cfg, roi_head.test_cfg
        if rpn_cfg is None or rcnn_cfg is None:
            raise ValueError(f'{name} has no test_cfg.rpn / test_cfg.rcnn: the export takes '
                             'nms_pre, nms, max_per_img and score_thr from model.test_cfg')
        self.rpn_nms_pre = int(rpn_cfg.get('nms_pre', -1))
        self.rpn_iou = _nms_iou(rpn_cfg, f'{name}.rpn_head')
        self.rpn_max = int(_cfg_value(rpn_cfg, 'max_per_img', f'{name}.rpn_head'))
        self.rpn_min_size = float(rpn_cfg.get('min_bbox_size', -1))
        self.score_thr = float(rcnn_cfg.get('score_thr', 0.0))
        self.iou = _nms_iou(rcnn_cfg, f'{name}.roi_head')
        self.max_per_img = int(_cfg_value(rcnn_cfg, 'max_per_img', f'{name}.roi_head'))
        self.mask_thr = float(rcnn_cfg.get('mask_thr_binary', 0.5))
        #: RoIAlign as matrix products (:mod:`mmeff.deploy.roi_align`), what CoreML converts
        self.matrix_roi_align = False
        self.coreml_ops = {'non_maximum_suppression': 2}  # the RPN's, the RoI head's

    def for_coreml(self) -> 'MaskRCNNPart':
        """This part with the matrix-product RoIAlign (coremltools has no RoIAlign)."""
        self.matrix_roi_align = True
        return self

    def _extractors(self) -> List[nn.Module]:
        roi_head = self.detector.roi_head
        return [e for e in (roi_head.bbox_roi_extractor,
                            getattr(roi_head, 'mask_roi_extractor', None)) if e is not None]

    def forward(self, image: Tensor) -> Outputs:
        self._check_batch(image)
        feats = self.detector.extract_feat(image)
        hw = tuple(image.shape[-2:])
        proposals, real = self._proposals(feats, hw)
        boxes, scores, labels, kept = self._detections(feats, proposals, real, hw)
        pick = kept.positions
        roi_head = self.detector.roi_head
        if not roi_head.with_mask:
            return boxes[pick], scores[pick], labels[pick]
        # the mask head runs on the padded max_per_img boxes (static), the outputs are N
        rois = _rois(boxes)
        mask_feats = roi_align_levels(roi_head.mask_roi_extractor, feats, rois,
                                      self.matrix_roi_align)
        mask_preds = roi_head.mask_head(mask_feats)
        if not roi_head.mask_head.class_agnostic:
            # the detection's class by a one-hot sum (CoreML's converter casts the class
            # indices to float, which its gather_along_axis refuses)
            classes = torch.arange(mask_preds.shape[1], device=labels.device)
            one_hot = (labels[:, None] == classes).to(mask_preds.dtype)[:, :, None, None]
            mask_preds = (mask_preds * one_hot).sum(1)
        else:
            mask_preds = mask_preds[:, 0]
        return boxes[pick], scores[pick], labels[pick], mask_preds.sigmoid()[pick]

    def _proposals(self, feats: Sequence[Tensor], hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """RPNHead.predict_by_feat: per level top ``nms_pre``, decode, size filter, NMS per
        level, the best ``max_per_img``: (max_per_img, 4) boxes padded, which are real."""
        rpn = self.detector.rpn_head
        cls_scores, bbox_preds = rpn(feats)
        priors = self._priors(rpn, cls_scores)
        boxes, scores, levels = [], [], []
        for level, (cls_score, bbox_pred, prior) in enumerate(zip(cls_scores, bbox_preds,
                                                                   priors)):
            cls = cls_score[0].permute(1, 2, 0).reshape(-1, rpn.cls_out_channels)
            score = cls.sigmoid()[:, 0] if rpn.use_sigmoid_cls else cls.softmax(-1)[:, 0]
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, rpn.bbox_coder.encode_size)
            if 0 < self.rpn_nms_pre < score.shape[0]:
                score, index = score.topk(self.rpn_nms_pre)
                deltas, prior = deltas[index], prior[index]
            boxes.append(rpn.bbox_coder.decode(prior, deltas, max_shape=hw))
            scores.append(score)
            levels.append(torch.full_like(score, level, dtype=torch.long))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        valid = _size_filter(boxes, self.rpn_min_size) if self.rpn_min_size >= 0 else \
            torch.ones_like(scores, dtype=torch.bool)
        kept = nms_padded(boxes, scores, levels, valid, len(cls_scores), self.rpn_iou,
                          self.rpn_max)
        return boxes[kept.index], kept.real

    def _detections(self, feats: Sequence[Tensor], proposals: Tensor, real: Tensor,
                    hw: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tensor, Kept]:
        """BBoxHead.predict_by_feat + multiclass_nms on the ``real`` proposals: boxes, scores,
        labels padded to max_per_img and what NMS kept."""
        roi_head = self.detector.roi_head
        head = roi_head.bbox_head
        rois = _rois(proposals)
        cls_score, bbox_pred = head(roi_align_levels(roi_head.bbox_roi_extractor, feats, rois,
                                                     self.matrix_roi_align))
        scores = F.softmax(cls_score, dim=-1)
        num_classes = 1 if head.reg_class_agnostic else head.num_classes
        boxes = head.bbox_coder.decode(proposals[:, None].expand(-1, num_classes, 4)
                                       .reshape(-1, 4),
                                       bbox_pred.reshape(-1, head.bbox_coder.encode_size),
                                       max_shape=hw)
        boxes = boxes.reshape(-1, num_classes, 4)
        scores = scores[:, :-1]  # the last column is the background
        boxes = boxes.expand(-1, scores.shape[1], 4).reshape(-1, 4)
        labels = (torch.zeros_like(scores, dtype=torch.long) +
                  torch.arange(scores.shape[1], device=scores.device)).reshape(-1)
        valid = torch.logical_and(scores > self.score_thr, real[:, None]).reshape(-1)
        scores = scores.reshape(-1)
        kept = nms_padded(boxes, scores, labels, valid, head.num_classes, self.iou,
                          self.max_per_img)
        return boxes[kept.index], scores[kept.index], labels[kept.index], kept


def _rois(boxes: Tensor) -> Tensor:
    """(N, 5) RoIs of image 0. Built without the symbolic N (``zeros_like`` of a column, no
    ``new_zeros(N, 1)``): after an NMS, N is a run-time size, and the CoreML converter has no
    op for arithmetic on such sizes (``sym_min``, ``sym_mul``)."""
    return torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)


def roi_align_levels(extractor: nn.Module, feats: Sequence[Tensor], rois: Tensor,
                     matrix: bool = False) -> Tensor:
    """MMDet's ``SingleRoIExtractor`` without data-dependent branches: every RoI is pooled at
    the level MMDet's rule (``map_roi_levels``) picks, without MMDet's per-level selection.

    torchvision's RoIAlign (ONNX) pools every RoI at every level and keeps the chosen one
    (cheap next to the heads for <= 1000 RoIs); ``matrix`` (CoreML) uses
    :func:`mmeff.deploy.roi_align.roi_align_multilevel`, whose weights select the level.
    Either equals the extractor's result.
    """
    layers = extractor.roi_layers
    feats = feats[:len(layers)]
    levels = extractor.map_roi_levels(rois, len(feats)) if len(feats) > 1 else None
    if matrix:
        from mmeff.deploy.roi_align import roi_align_multilevel
        layer = _same_roi_layers(layers)
        return roi_align_multilevel(feats, rois, levels, tuple(layer.output_size),
                                    [float(m.spatial_scale) for m in layers],
                                    int(layer.sampling_ratio), bool(layer.aligned))
    from torchvision.ops import roi_align
    if levels is None:
        return _roi_align(roi_align, layers[0], feats[0], rois)
    out = None
    for i, (layer, feat) in enumerate(zip(layers, feats)):
        pooled = _roi_align(roi_align, layer, feat, rois)
        chosen = (levels == i).to(pooled.dtype)[:, None, None, None]
        out = pooled * chosen if out is None else out + pooled * chosen
    return out


def _same_roi_layers(layers: Sequence[nn.Module]) -> nn.Module:
    """The one RoIAlign setting of an extractor's levels (MMDet builds them from one
    ``roi_layer`` config; only the scale differs)."""
    settings = {(tuple(m.output_size), int(m.sampling_ratio), bool(m.aligned)) for m in layers}
    if len(settings) != 1:
        raise ValueError(f'RoI layers with different settings per level {sorted(settings)} '
                         'are not exported to CoreML; use one roi_layer config')
    return layers[0]


def _roi_align(roi_align, layer: nn.Module, feat: Tensor, rois: Tensor) -> Tensor:
    return roi_align(feat, rois, output_size=tuple(layer.output_size),
                     spatial_scale=float(layer.spatial_scale),
                     sampling_ratio=int(layer.sampling_ratio), aligned=bool(layer.aligned))


def paste_masks(masks, boxes, hw: Tuple[int, int],
                threshold: Optional[float] = 0.5) -> np.ndarray:
    """The host step after a Mask R-CNN graph: paste the (N, 28, 28) probabilities into the
    image as MMDet does (``FCNMaskHead._do_paste_mask``: bilinear ``grid_sample`` of the mask
    over its box, ``align_corners=False``) and threshold ``>= threshold`` (the config's
    ``test_cfg.rcnn.mask_thr_binary``). Returns bool (N, H, W), or the pasted probabilities
    when ``threshold`` is None."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    masks = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
    if masks.shape[0] == 0:
        return np.zeros((0,) + tuple(hw), dtype=bool if threshold is not None else np.float32)
    pasted, _ = _do_paste_mask(masks[:, None], boxes, hw[0], hw[1], skip_empty=False)
    pasted = pasted.numpy()
    return pasted if threshold is None else pasted >= threshold


# --------------------------------------------------------------------------------- parity
#: what "the same detections" means (fp32, ONNX Runtime or fused PyTorch vs MMDet / eager):
#: every detection scored above ``score_thr + SCORE_MARGIN`` on either side is matched (same
#: label, box within BOX_TOL pixels, score within SCORE_TOL); masks agree on MASK_AGREEMENT of
#: the pixels of each matched pair's union, not counting pixels whose probability is within
#: MASK_MARGIN of the binarisation threshold (rounding decides those).
DETECTION_TOLERANCE = dict(box_px=0.05, score=1e-4, mask_agreement=0.99, score_margin=1e-3,
                           mask_margin=1e-3)


@dataclass
class DetectionParity:
    """Matched-set comparison of two detection lists (order-free: NMS ties may reorder)."""
    reference: int
    got: int
    matched: int
    unmatched_confident: int
    max_box_px: float
    max_score: float
    min_mask_agreement: Optional[float] = None
    tolerance: Dict[str, float] = field(default_factory=lambda: dict(DETECTION_TOLERANCE))

    #: ExportReport prints ``max_rel``-style figures for every parity; a detection list has
    #: none, so ok() ignores the relative tolerance it is given
    def ok(self, tolerance: float = 0.0) -> bool:
        tol = self.tolerance
        masks_ok = self.min_mask_agreement is None or \
            self.min_mask_agreement >= tol['mask_agreement']
        return (self.unmatched_confident == 0 and self.max_box_px <= tol['box_px']
                and self.max_score <= tol['score'] and masks_ok)

    def text(self) -> str:
        masks = '' if self.min_mask_agreement is None else \
            f', masks agree on >= {100 * self.min_mask_agreement:.2f}% of pixels'
        return (f'{self.matched} of {self.reference} detections matched ({self.got} exported, '
                f'{self.unmatched_confident} confident unmatched), boxes within '
                f'{self.max_box_px:.2e} px, scores within {self.max_score:.2e}{masks} '
                f"(tolerance: {self.tolerance['box_px']} px, {self.tolerance['score']:g}, masks "
                f"{100 * self.tolerance['mask_agreement']:g}%)")


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def match_detections(ref_boxes, ref_labels, got_boxes, got_labels) -> List[Tuple[int, int]]:
    """Pairs (i, j): reference i and candidate j of the same label whose boxes differ least
    (max abs coordinate), greedily from the closest pair."""
    ref_boxes, got_boxes = _np(ref_boxes).reshape(-1, 4), _np(got_boxes).reshape(-1, 4)
    if not len(ref_boxes) or not len(got_boxes):
        return []
    dist = np.abs(ref_boxes[:, None] - got_boxes[None]).max(-1)
    dist[_np(ref_labels)[:, None] != _np(got_labels)[None]] = np.inf
    pairs, used_r, used_g = [], set(), set()
    for flat in np.argsort(dist, axis=None):
        i, j = np.unravel_index(flat, dist.shape)
        if not np.isfinite(dist[i, j]):
            break
        if i in used_r or j in used_g:
            continue
        pairs.append((int(i), int(j)))
        used_r.add(i)
        used_g.add(j)
    return pairs


def compare_detections(reference: Sequence, got: Sequence, score_thr: float = 0.0,
                       masks_hw: Optional[Tuple[int, int]] = None, mask_thr: float = 0.5,
                       max_per_img: int = 0) -> DetectionParity:
    """Compare (boxes, scores, labels[, masks]) lists. Masks are (N, 28, 28) probabilities on
    both sides unless ``masks_hw`` is given: then the exported ones are pasted to (H, W) and
    compared with the reference's (N, H, W) bool masks, as MMDet's predict gives them.

    A detection may go unmatched only at a cut: its score within the margin of ``score_thr``
    or, when a list is full (``max_per_img`` entries), of that list's lowest score."""
    rb, rs, rl = (_np(t) for t in reference[:3])
    gb, gs, gl = (_np(t) for t in got[:3])
    cut = score_thr
    for scores in (rs, gs):
        if max_per_img > 0 and len(scores) >= max_per_img:
            cut = max(cut, float(scores.min()))
    margin = cut + DETECTION_TOLERANCE['score_margin']
    pairs = [(i, j) for i, j in match_detections(rb, rl, gb, gl)
             if not _cut_strangers(rb[i], gb[j], rs[i], gs[j], margin)]
    matched_r, matched_g = {i for i, _ in pairs}, {j for _, j in pairs}
    unmatched = sum(rs[i] > margin for i in range(len(rs)) if i not in matched_r) + \
        sum(gs[j] > margin for j in range(len(gs)) if j not in matched_g)
    box = max((float(np.abs(rb[i] - gb[j]).max()) for i, j in pairs), default=0.0)
    score = max((float(abs(rs[i] - gs[j])) for i, j in pairs), default=0.0)
    agreement = None
    if len(reference) > 3 and len(got) > 3:
        rm, prob = _np(reference[3]), _np(got[3])
        if masks_hw is not None:
            prob = paste_masks(prob, gb, masks_hw, threshold=None)
        else:
            rm = rm >= mask_thr
        sure = np.abs(prob - mask_thr) >= DETECTION_TOLERANCE['mask_margin']
        gm = prob >= mask_thr
        agreement = min((_agreement(rm[i].astype(bool), gm[j], sure[j]) for i, j in pairs),
                        default=1.0)
    return DetectionParity(reference=len(rs), got=len(gs), matched=len(pairs),
                           unmatched_confident=int(unmatched), max_box_px=box, max_score=score,
                           min_mask_agreement=agreement)


def _cut_strangers(ref_box: np.ndarray, got_box: np.ndarray, ref_score: float,
                   got_score: float, margin: float) -> bool:
    """Whether a matched pair is two different detections that each made one list only by
    a rounding difference at the cut (both scores within ``margin``, boxes apart by more
    than the box tolerance): left unmatched, as each alone would be. Greedy matching pairs
    any leftover detections of the same label, so without this a swap at the score
    threshold or at ``max_per_img`` reads as a box hundreds of pixels off."""
    apart = float(np.abs(ref_box - got_box).max()) > DETECTION_TOLERANCE['box_px']
    return apart and ref_score <= margin and got_score <= margin


def _agreement(a: np.ndarray, b: np.ndarray, sure: np.ndarray) -> float:
    """Share of the pixels in the union of two masks where they agree, among the pixels
    ``sure`` marks as decided (1.0 when none is left)."""
    union = np.logical_or(a, b) & sure
    total = union.sum()
    return 1.0 if total == 0 else float((np.logical_and(a, b) & sure).sum() / total)


def mmdet_predictions(detector: nn.Module, image: Tensor) -> List[np.ndarray]:
    """MMDet's own ``predict`` on a normalised (1, 3, H, W) image whose original size is its
    size (no rescale): [boxes, scores, labels(, masks as bool (N, H, W))]."""
    from mmdet.structures import DetDataSample
    h, w = image.shape[-2:]
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         scale_factor=(1.0, 1.0), batch_input_shape=(h, w),
                                         pad_shape=(h, w)))
    with torch.no_grad():
        result = detector.predict(image, [sample], rescale=True)[0].pred_instances
    out = [_np(result.bboxes), _np(result.scores), _np(result.labels)]
    if 'masks' in result:
        out.append(_np(result.masks))
    return out
