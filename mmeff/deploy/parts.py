"""What gets exported: plain tensor-in / tuple-of-tensors-out views of mmeff-based models.

MMSeg and MMDet models take data samples and return structured results; exporters need a
``forward(image) -> (tensor, ...)``. Each wrapper here exposes one *part* of a model with fixed,
named outputs. Inputs are preprocessed images (RGB, mean/std-normalised as the config's
``data_preprocessor`` does) unless the part is wrapped in :class:`PixelInputPart`
(:func:`prepare_part`: the image in, the normalisation inside the graph; CoreML's default).

Parts:
    classifier     image -> logits (mmeff classification model)
    backbone       image -> one feature map per out_index (multi-output)
    segmentor      image -> per-pixel logits at the input resolution (MMSeg EncoderDecoder)
    detector       image -> boxes, scores, labels (+ masks): RetinaNet-style single-stage or
                   Faster / Mask R-CNN detectors whole, NMS in the graph (mmeff.deploy.detectors;
                   what ``auto`` picks for them)
    detector-neck  image -> neck feature maps (any MMDet detector with backbone + neck)
    detector-head  image -> neck maps + the dense head's raw outputs (single-stage, e.g. RetinaNet)
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.deploy.part_base import ExportPart, Outputs
from mmeff.models.backbones.base import MobileBackbone
from mmeff.models.classifiers.classifier_net import MobileClassifierNet

PARTS = ('auto', 'classifier', 'backbone', 'segmentor', 'detector', 'detector-neck',
         'detector-head')


class ClassifierPart(ExportPart):
    part = 'classifier'

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> Outputs:
        out = self.classifier(image)
        if isinstance(out, (tuple, list)):  # (cls, dist) heads in train mode: eval averages
            out = sum(out) / len(out)
        return (out,)

    def output_names(self, num_outputs: int) -> List[str]:
        return ['logits']


class BackbonePart(ExportPart):
    part = 'backbone'

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> Outputs:
        return tuple(self.backbone(image))

    def output_names(self, num_outputs: int) -> List[str]:
        indices = getattr(self.backbone, 'out_indices', None)
        if indices is not None and len(indices) == num_outputs:
            return [f'stage{i}' for i in indices]
        return [f'feat{i}' for i in range(num_outputs)]


class SegmentorPart(ExportPart):
    """MMSeg EncoderDecoder end to end: backbone, neck, decode head, bilinear resize to input."""
    part = 'segmentor'

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, image: torch.Tensor) -> Outputs:
        feats = self.segmentor.extract_feat(image)
        logits = self.segmentor.decode_head(feats)
        head = self.segmentor.decode_head
        logits = F.interpolate(logits, size=image.shape[-2:], mode='bilinear',
                               align_corners=getattr(head, 'align_corners', False))
        return (logits,)

    def output_names(self, num_outputs: int) -> List[str]:
        return ['seg_logits']


class DetectorPart(ExportPart):
    """MMDet backbone + neck, optionally followed by the dense head's raw (pre-NMS) outputs."""

    #: names of a dense head's output groups, by position (RetinaNet: cls, bbox; FCOS adds one)
    head_groups = ('cls_score', 'bbox_pred', 'centerness')

    def __init__(self, detector: nn.Module, with_head: bool):
        super().__init__()
        self.detector = detector
        self.with_head = with_head
        self.part = 'detector-head' if with_head else 'detector-neck'
        self._groups: Optional[List[int]] = None

    def forward(self, image: torch.Tensor) -> Outputs:
        feats = tuple(self.detector.extract_feat(image))
        if not self.with_head:
            return feats
        head_out = self.detector.bbox_head(feats)
        groups = [list(g) if isinstance(g, (list, tuple)) else [g] for g in head_out]
        self._groups = [len(g) for g in groups]
        return feats + tuple(t for g in groups for t in g)

    def output_names(self, num_outputs: int) -> List[str]:
        if not self.with_head or self._groups is None:
            return [f'neck{i}' for i in range(num_outputs)]
        num_feats = num_outputs - sum(self._groups)
        names = [f'neck{i}' for i in range(num_feats)]
        for g, count in enumerate(self._groups):
            base = self.head_groups[g] if g < len(self.head_groups) else f'head{g}_'
            names += [f'{base}{i}' for i in range(count)]
        return names


def find_mmeff_backbone(model: nn.Module) -> Optional[MobileBackbone]:
    """The mmeff backbone a model is built on (itself, ``.backbone``), or None."""
    if isinstance(model, MobileBackbone):
        return model
    backbone = getattr(model, 'backbone', None)
    return backbone if isinstance(backbone, MobileBackbone) else None


def _find_classifier(model: nn.Module) -> Optional[nn.Module]:
    """The classification network in ``model``: itself, the one MobileClassifierNet inside, or
    a view of a training wrapper with an mmeff ``backbone`` and a ``head`` (e.g. mmeff's
    ImageClassifier of configs/cls, whose tensor mode is ``head(backbone(x)[-1])``)."""
    if isinstance(model, MobileClassifierNet):
        return model
    found = [m for m in model.modules() if isinstance(m, MobileClassifierNet)]
    if len(found) == 1:
        return found[0]
    dense = any(hasattr(model, a) for a in ('neck', 'decode_head', 'bbox_head', 'rpn_head'))
    if isinstance(getattr(model, 'backbone', None), MobileBackbone) and \
            isinstance(getattr(model, 'head', None), nn.Module) and not dense:
        return MobileClassifierNet(model.backbone, model.head)
    return None


def _kind(model: nn.Module) -> str:
    """Which part ``auto`` means for this model."""
    if _find_classifier(model) is not None:
        return 'classifier'
    if isinstance(model, MobileBackbone):
        return 'backbone'
    if hasattr(model, 'decode_head') and hasattr(model, 'extract_feat'):
        return 'segmentor'
    if hasattr(model, 'extract_feat') and getattr(model, 'with_neck', False):
        single_stage = getattr(model, 'bbox_head', None) is not None and \
            getattr(model, 'rpn_head', None) is None and getattr(model, 'roi_head', None) is None
        return 'detector-head' if single_stage else 'detector-neck'
    return 'unknown'


def _whole_detector(model: nn.Module, kind: str) -> ExportPart:
    """The whole-detector part (NMS in the graph) of a single- or two-stage detector."""
    from mmeff.deploy.detectors import MaskRCNNPart, RetinaNetPart
    if kind == 'detector-head':
        return RetinaNetPart(model)
    return MaskRCNNPart(model)


def _auto_detector(model: nn.Module, kind: str) -> str:
    """``auto`` for a detector: the whole detector when its heads can be exported whole,
    else what can (raw head maps / neck maps)."""
    try:
        _whole_detector(model, kind)
    except ValueError:
        return kind
    return 'detector'


def make_part(model: nn.Module, part: str = 'auto') -> ExportPart:
    """Wrap ``model`` for export as ``part`` (see module doc); clear errors when impossible."""
    if part not in PARTS:
        raise ValueError(f'unknown part {part!r}; choose one of {PARTS}')
    backbone = find_mmeff_backbone(model)
    if backbone is None and _find_classifier(model) is None:
        inner = getattr(model, 'backbone', None)
        what = type(inner).__name__ if inner is not None else 'no backbone'
        raise ValueError(
            f'{type(model).__name__} is not built on an mmeff backbone ({what}); export and its '
            'deploy path (BN folding, frozen attention biases) support models whose backbone is '
            'mmeff.EfficientFormer / EfficientFormerV2 / EfficientViT')
    kind = _kind(model)
    if part == 'auto':
        part = _auto_detector(model, kind) if kind.startswith('detector') else kind
    if part == 'classifier':
        classifier = _find_classifier(model)
        if classifier is None:
            raise ValueError(f'--part classifier needs a classification model; '
                             f'{type(model).__name__} is a {kind}. Try --part {kind}')
        return ClassifierPart(classifier)
    if part == 'backbone':
        if backbone is None:
            backbone = _find_classifier(model).backbone
        return BackbonePart(backbone)
    if part == 'segmentor':
        if kind != 'segmentor':
            raise ValueError(f'--part segmentor needs an MMSeg EncoderDecoder config; '
                             f'{type(model).__name__} is a {kind}')
        return SegmentorPart(model)
    if part == 'detector':
        if kind not in ('detector-neck', 'detector-head'):
            raise ValueError(f'--part detector needs an MMDet detector with a neck; '
                             f'{type(model).__name__} is a {kind}')
        return _whole_detector(model, kind)
    if part in ('detector-neck', 'detector-head'):
        if kind not in ('detector-neck', 'detector-head'):
            raise ValueError(f'--part {part} needs an MMDet detector with a neck; '
                             f'{type(model).__name__} is a {kind}')
        if part == 'detector-head' and kind != 'detector-head':
            raise ValueError(
                f'--part detector-head exports a single-stage dense head (e.g. RetinaNet); '
                f'{type(model).__name__} is two-stage (RPN + RoI heads). Use --part detector '
                '(the whole detector, NMS and RoIAlign in the graph) or --part detector-neck')
        return DetectorPart(model, with_head=part == 'detector-head')
    raise ValueError(f'cannot tell what to export from {type(model).__name__}; pass --part '
                     f'with one of {PARTS[1:]}')


def flatten_outputs(out) -> List[torch.Tensor]:
    """Tensors of a (nested) output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    raise TypeError(f'cannot export an output of type {type(out).__name__}')


def describe_outputs(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> str:
    return ', '.join(f'{n} {tuple(t.shape)}' for n, t in zip(names, tensors))


# ------------------------------------------------------------------------------ image input
class PixelInputPart(ExportPart):
    """A part that takes the image itself (pixels 0..255, float, NCHW, in the channel order
    the config's model consumes after its data preprocessor's ``bgr_to_rgb``): the
    preprocessor's ``(x - mean) / std`` is the graph's first step.

    CoreML: the input is an ``ImageType`` whose scale / bias do the normalisation
    (``scale = 1 / s``, ``bias = -mean / s`` with ``s`` the mean of the three stds; CoreML's
    image scale is one number) and the graph starts with the per-channel remainder
    ``s / std`` (a no-op that is left out when the stds are equal). Vision's VNCoreMLRequest
    can then feed it a CGImage / CVPixelBuffer directly.
    """

    def __init__(self, inner: ExportPart, mean: Sequence[float], std: Sequence[float],
                 color_layout: str = 'RGB'):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f'an image input needs 3 means and 3 positive stds, got mean '
                             f'{list(mean)} std {list(std)}')
        self.inner = inner
        self.part = inner.part
        self.color_layout = color_layout
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.image_scale = 1.0 / float(self.std.mean())
        if hasattr(inner, 'compare_outputs'):  # detection lists: matched-set parity
            self.compare_outputs = inner.compare_outputs

    def forward(self, image: torch.Tensor) -> Outputs:
        return self.inner((image - self.mean) / self.std)

    def output_names(self, num_outputs: int) -> List[str]:
        return self.inner.output_names(num_outputs)

    @property
    def image_type_args(self) -> dict:
        """``coremltools.ImageType`` keyword arguments: scale, bias, color_layout."""
        return dict(scale=self.image_scale, color_layout=self.color_layout,
                    bias=[-float(m) * self.image_scale for m in self.mean.flatten()])

    def coreml_view(self) -> 'ScaledImagePart':
        """The graph CoreML runs after its ImageType's scale and bias."""
        return ScaledImagePart(self)


class ScaledImagePart(ExportPart):
    """What CoreML converts for a :class:`PixelInputPart`: its input is
    ``pixels * scale + bias`` (the ImageType's preprocessing); the graph applies the
    per-channel remainder of the std and runs the part."""

    def __init__(self, pixel_part: PixelInputPart):
        super().__init__()
        self.inner = pixel_part.inner
        self.part = pixel_part.part
        self.image_type_args = pixel_part.image_type_args
        residual = 1.0 / (pixel_part.std * pixel_part.image_scale)
        self.register_buffer('residual', residual)
        self.uniform = bool(torch.allclose(residual, torch.ones_like(residual)))
        self._pixel_part = [pixel_part]  # a list: not registered as a child module
        if hasattr(self.inner, 'compare_outputs'):  # detection lists: matched-set parity
            self.compare_outputs = self.inner.compare_outputs

    def prescale(self, pixels: torch.Tensor) -> torch.Tensor:
        """What CoreML's ImageType hands the graph for ``pixels``."""
        args = self.image_type_args
        return pixels * args['scale'] + torch.tensor(args['bias']).view(1, 3, 1, 1).to(pixels)

    def forward(self, image: torch.Tensor) -> Outputs:
        return self.inner(image if self.uniform else image * self.residual)

    def output_names(self, num_outputs: int) -> List[str]:
        return self.inner.output_names(num_outputs)


def data_normalisation(model: nn.Module) -> Optional[Tuple[List[float], List[float], str]]:
    """(mean, std, colour layout) of a config's data preprocessor, or None if it has none."""
    pre = getattr(model, 'data_preprocessor', None)
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor) or \
            mean.numel() != 3:
        return None
    # MMDet / MMSeg configs give mean/std in the order the network sees after the swap
    # (MMEngine's ImgDataPreprocessor says _channel_conversion, MMSeg's channel_conversion)
    swapped = getattr(pre, '_channel_conversion', getattr(pre, 'channel_conversion', False))
    layout = 'RGB' if swapped else 'BGR'
    return mean.flatten().tolist(), std.flatten().tolist(), layout


def prepare_part(model: nn.Module, part: str = 'auto', fmt: str = 'onnx',
                 image_input: Optional[bool] = None) -> ExportPart:
    """:func:`make_part` for a format: CoreML gets the detector's CoreML form (the same
    outputs, RoIAlign as matrix products) and an image input by default when the config's
    data preprocessor says how to normalise (``image_input=None``); ``True`` insists on it."""
    exported = make_part(model, part)
    if fmt == 'coreml' and exported.part == 'detector':
        exported = exported.for_coreml()
    if image_input is False or (image_input is None and fmt != 'coreml'):
        return exported
    norm = data_normalisation(model)
    if norm is None:
        if image_input:
            raise ValueError(f'--image-input needs the mean and std of the model\'s data '
                             f'preprocessor; {type(model).__name__} has none (a model built '
                             'by name takes normalised tensors). Use a config with '
                             'data_preprocessor=dict(mean=..., std=...), or drop --image-input')
        return exported
    return PixelInputPart(exported, *norm)
