"""The EfficientViT (Microsoft) ImageNet classifier in mmeff's canonical layout."""
from typing import Union

from mmeff.models.backbones.efficientvit.backbone import EfficientViT
from mmeff.models.heads.efficientvit_head import EfficientViTClsHead
from mmeff.models.classifiers.classifier_net import MobileClassifierNet


def efficientvit_classifier(arch: Union[str, dict] = 'm0', num_classes: int = 1000,
                            distillation: bool = False, **backbone_kwargs) -> MobileClassifierNet:
    """:class:`EfficientViT` (last stage only) + :class:`EfficientViTClsHead`.

    With 1000 classes and no distillation head the parameter count equals the official one
    (M0..M5: 2,349,436 / 2,980,560 / 4,187,554 / 6,900,722 / 8,804,228 / 12,473,772).
    ``backbone_kwargs`` go to :class:`EfficientViT` (e.g. ``img_size``, ``drop_path_rate``).
    """
    for key in ('out_indices', 'extra_levels'):
        if key in backbone_kwargs:
            raise ValueError(f'{key} is fixed for the classifier (the head reads the last '
                             'stage); build EfficientViT directly instead')
    backbone = EfficientViT(arch, out_indices=(-1,), **backbone_kwargs)
    head = EfficientViTClsHead(backbone.out_channels[-1], num_classes, distillation)
    return MobileClassifierNet(backbone, head)
