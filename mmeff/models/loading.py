"""Build the model a tool was pointed at: a zoo name or any mmengine config, plus a checkpoint.

* A zoo name (``efficientformer_l1``) builds the classifier, or the dense backbone with every
  stage output when ``part='backbone'``. Its checkpoint may be in any layout the family's
  converter knows (official release, timm, mmpretrain, mmeff).
* A config file (``configs/cls/*.py``, an MMSeg or MMDet config using an mmeff backbone) is
  built with its ``default_scope``; its checkpoint is one that config trained (mmengine
  ``{'state_dict': ..}`` or a plain state dict) and is loaded strictly.
"""
import os
from typing import Optional

from torch import nn

from mmeff.models.zoo import build_backbone, build_classifier, get_variant, is_variant_name, variant_names


def load_model(config_or_name: str, checkpoint: Optional[str] = None,
               part: str = 'auto') -> nn.Module:
    """Return the (eval-mode) model named by a zoo name or a config path."""
    if is_variant_name(config_or_name) and not os.path.exists(config_or_name):
        return _from_name(config_or_name, checkpoint, part)
    if not os.path.isfile(config_or_name):
        raise ValueError(f'{config_or_name!r} is neither a config file nor a model name; '
                         f'known names: {variant_names()}')
    return _from_config(config_or_name, checkpoint)


def _from_name(name: str, checkpoint: Optional[str], part: str) -> nn.Module:
    if part not in ('auto', 'classifier', 'backbone'):
        raise ValueError(f'a model name builds a classifier or a backbone; --part {part} needs '
                         'a config file (an MMSeg/MMDet config using an mmeff backbone)')
    if part == 'backbone':
        model = build_backbone(name)
        if checkpoint:
            model.load_checkpoint(checkpoint)
        return model.eval()
    model = build_classifier(name)
    if checkpoint:
        from mmeff.checkpoint import load_pretrained
        backbone = model.backbone
        load_pretrained(model, checkpoint, backbone.checkpoint_converter(), prefix='',
                        arch_name=get_variant(name).arch)
    return model.eval()


def _build(model_cfg, registry) -> nn.Module:
    if model_cfg.get('teacher') and 'backbone' in model_cfg and 'head' in model_cfg:
        # A distillation teacher only matters in training (and needs its own weights file):
        # build the student alone, with the distillation head its checkpoints contain.
        from mmeff.models.classifiers.classifier_net import MobileClassifierNet
        head = dict(model_cfg.head)
        head.setdefault('distillation', True)
        return MobileClassifierNet(registry.build(model_cfg.backbone), registry.build(head))
    return registry.build(model_cfg)


def _from_config(path: str, checkpoint: Optional[str]) -> nn.Module:
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import mmeff.models  # noqa: F401  (registers mmeff's modules)

    cfg = Config.fromfile(path)
    if 'model' not in cfg:
        raise ValueError(f'config {path!r} has no `model` entry')
    # the config's scope only while building: no global default scope is left behind
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmeff')):
        model = _build(cfg.model, MODELS)
    if checkpoint:
        from mmeff.checkpoint import read_state_dict
        state = read_state_dict(checkpoint)
        try:  # a backbone converts another layout on load and says when it knows none
            result = model.load_state_dict(state, strict=False)
        except ValueError as err:
            raise ValueError(f'checkpoint {checkpoint!r} does not fit the model of {path!r}: '
                             f'{err}') from err
        missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
        if missing or result.unexpected_keys:
            raise ValueError(
                f'checkpoint {checkpoint!r} does not fit the model of {path!r}: '
                f'{len(missing)} missing keys (e.g. {missing[:3]}), '
                f'{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}). '
                'Pass the checkpoint this config trained; for pretrained backbone weights use '
                'the config\'s init_cfg instead')
    return model.eval()
