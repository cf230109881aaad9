"""Build-time check that an mmeff backbone, the FPN and the heads agree on the pyramid.

Mistakes here do not fail on their own: a detector whose FPN skips the stride-8 map trains
silently with anchors at the wrong strides (docs/dropin.md, EfficientViT with
``extra_levels=(8,)`` and the stock ``start_level=1``), and a backbone output that nothing reads
but that holds an output norm makes distributed training fail after the first step
(``find_unused_parameters=False``). What can be known from the config is checked here, before
anything trains, with the values to set in the message.
"""
from typing import List, Optional, Sequence

from mmengine.config import ConfigDict

#: neck types whose (in_channels, start_level, end_level, num_outs) follow MMDet's / MMSeg's FPN
_FPN_TYPES = ('FPN', 'mmdet.FPN', 'mmseg.FPN')
#: where a head keeps the strides it assumes
_STRIDE_KEYS = (('anchor_generator', 'strides'), ('prior_generator', 'strides'), ('strides',))


class PyramidMismatchError(ValueError):
    """The backbone's outputs cannot give what the neck or the heads were told."""


def check_pyramid(model: dict) -> None:
    """Check an MMDet / MMSeg model config with an mmeff backbone (no-op for other backbones).

    Raises :class:`PyramidMismatchError` naming the fix when the neck's ``in_channels`` differ
    from the backbone's ``out_channels``, when the strides an FPN hands on differ from those
    the heads' anchors / points assume, or when the FPN skips an output that has parameters."""
    backbone_cfg = model.get('backbone') or {}
    neck = model.get('neck')
    if not str(backbone_cfg.get('type', '')).startswith('mmeff.') or \
            not isinstance(neck, (dict, ConfigDict)) or neck.get('type') not in _FPN_TYPES:
        return
    strides = _check_fpn(neck, _build_backbone(backbone_cfg))
    for head_key in ('rpn_head', 'bbox_head'):
        _check_head_strides(model.get(head_key), head_key, strides)


def _build_backbone(cfg: dict):
    from mmeff.registry import MODELS
    cfg = dict(cfg, init_cfg=None)  # the shapes only: no checkpoint is read here
    return MODELS.build(cfg)


def _check_fpn(neck: dict, backbone) -> List[int]:
    """The strides of the FPN's outputs, after checking its inputs against the backbone."""
    channels, strides = list(backbone.out_channels), list(backbone.out_strides)
    in_channels = list(neck.get('in_channels') or [])
    if in_channels != channels:
        raise PyramidMismatchError(
            f'model.neck.in_channels={in_channels} but the backbone returns maps of '
            f'{channels} channels at strides {strides}: set neck.in_channels={channels} (the '
            "backbone's out_channels), or change its out_indices (docs/dropin.md)")
    start = int(neck.get('start_level', 0))
    end = int(neck.get('end_level', -1))
    end = len(channels) if end == -1 else end + 1 if neck.get('type') != 'mmseg.FPN' else end
    _check_skipped(backbone, strides, start)
    used = strides[start:end]
    extra = int(neck.get('num_outs', len(used))) - len(used)
    return used + [used[-1] * 2 ** (i + 1) for i in range(max(extra, 0))]


def _check_skipped(backbone, strides: Sequence[int], start: int) -> None:
    """Outputs below ``start_level`` that hold parameters get no gradient under DDP."""
    stage_outputs = list(backbone.out_indices)
    offset = len(strides) - len(stage_outputs)  # EfficientViT's stem levels come first
    for position in range(start):
        if position < offset:
            continue  # a stem activation: no parameters of its own
        norm = getattr(backbone, f'out_norm{stage_outputs[position - offset]}', None)
        if norm is not None and any(True for _ in norm.parameters()):
            kept = tuple(stage_outputs[start - offset:])
            raise PyramidMismatchError(
                f'the FPN starts at level {start} and skips the backbone output at stride '
                f'{strides[position]}, whose output norm then gets no gradient (distributed '
                "training fails with find_unused_parameters=False): request only the maps "
                f'the neck reads, out_indices={kept} with neck start_level=0 and in_channels='
                f'{list(backbone.out_channels)[start:]} (docs/dropin.md)')


def _head_strides(head: dict) -> Optional[List[int]]:
    for path in _STRIDE_KEYS:
        value = head
        for key in path:
            value = value.get(key) if isinstance(value, (dict, ConfigDict)) else None
        if value is not None:
            return [s if isinstance(s, int) else s[0] for s in value]
    return None


def _check_head_strides(head: Optional[dict], name: str, fpn_strides: List[int]) -> None:
    if not isinstance(head, (dict, ConfigDict)):
        return
    assumed = _head_strides(head)
    if assumed is None or fpn_strides[:len(assumed)] == assumed:
        return
    raise PyramidMismatchError(
        f'the FPN outputs maps at strides {fpn_strides} but model.{name} assumes strides '
        f'{assumed} (its anchors / points would sit at the wrong places). Feed the FPN the '
        'backbone maps from the first assumed stride on: EfficientFormer / V2 '
        'out_indices=(1, 2, 3) with neck start_level=0 for P3-P7; EfficientViT '
        'extra_levels=(4, 8) with the stock start_level=1 (docs/dropin.md)')
