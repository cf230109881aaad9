"""The EfficientFormerV2 ImageNet classifier in mmeff's canonical layout."""
from typing import Union

from mmeff.models.backbones.efficientformer_v2 import EfficientFormerV2
from mmeff.models.backbones.efficientformer_v2.arch import PRETRAIN_DROP_PATH
from mmeff.models.classifiers.classifier_net import MobileClassifierNet
from mmeff.models.heads.efficientformer_v2_head import EfficientFormerV2ClsHead


def efficientformer_v2_classifier(arch: Union[str, dict] = 's0', num_classes: int = 1000,
                                  distillation: bool = True, **kwargs) -> MobileClassifierNet:
    """EfficientFormerV2 ImageNet classifier in mmeff's canonical layout.

    Same function and parameter count as the official model and timm's
    ``efficientformerv2_<arch>`` (backbone with out_indices=(3,) and no output norms, then
    :class:`EfficientFormerV2ClsHead`). ``kwargs`` go to the backbone; ``drop_path_rate``
    defaults to the rate the published model was trained with.
    """
    for key in ('out_indices', 'with_out_norms'):
        if key in kwargs:
            raise ValueError(f'efficientformer_v2_classifier fixes {key}; build an '
                             'EfficientFormerV2 backbone directly to choose it')
    if isinstance(arch, str) and 'drop_path_rate' not in kwargs:
        kwargs['drop_path_rate'] = PRETRAIN_DROP_PATH.get(arch.lower(), 0.0)
    backbone = EfficientFormerV2(arch, out_indices=(3,), with_out_norms=False, **kwargs)
    if backbone.init_cfg:
        backbone.init_weights()  # e.g. Pretrained: load it now (a plain module gets no call)
    head = EfficientFormerV2ClsHead(backbone.widths[-1], num_classes, distillation)
    return MobileClassifierNet(backbone, head)
