"""The EfficientFormer ImageNet classifier in mmeff's canonical layout."""
from typing import Union

from mmeff.models.backbones.efficientformer.backbone import EfficientFormer
from mmeff.models.heads.efficientformer_head import EfficientFormerClsHead
from mmeff.models.classifiers.classifier_net import MobileClassifierNet


def efficientformer_classifier(arch: Union[str, dict] = 'l1', num_classes: int = 1000,
                               distillation: bool = True, **backbone_kwargs
                               ) -> MobileClassifierNet:
    """Backbone (last stage only, no dense output norms) + :class:`EfficientFormerClsHead`.

    The parameter count equals the official model's (L1 12,289,928; L3 31,406,000;
    L7 82,229,328 with 1000 classes and distillation). ``backbone_kwargs`` go to
    :class:`EfficientFormer` (e.g. ``drop_path_rate``, ``with_cp``).
    """
    for key in ('out_indices', 'with_out_norms'):
        if key in backbone_kwargs:
            raise ValueError(f'{key} is fixed for the classifier (the head reads the last stage '
                             'and has its own LayerNorm); build EfficientFormer directly instead')
    backbone = EfficientFormer(arch, out_indices=(3,), with_out_norms=False, **backbone_kwargs)
    head = EfficientFormerClsHead(backbone.widths[-1], num_classes, distillation)
    return MobileClassifierNet(backbone, head)
