"""The model zoo as data: every variant of every family, how to build it, and the paper's figures.

Export and benchmark tools look models up here by name (``efficientformer_l1``,
``efficientformerv2_s0``, ``efficientvit_m0``: timm's names, so the two line up), so adding a
family means adding one :class:`Family` entry (or calling :func:`register_family` from the
family's module) — no tool changes. A family whose code has not been merged yet is listed but
reported as unavailable with a message that says which builder is missing.
"""
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from torch import nn


@dataclass(frozen=True)
class Family:
    """One backbone family.

    Args:
        name: display name ('EfficientFormer').
        prefix: model-name prefix; a variant is ``prefix + arch`` ('efficientformer_' + 'l1').
        backbone_type: mmeff registry name of the dense backbone ('EfficientFormer').
        builder: name of the function in ``mmeff.models`` that builds the classifier,
            called as ``builder(arch)``.
        timm_prefix: prefix of timm's equivalent model names (the numerical reference).
        paper: arch -> (params in M, GMACs at 224x224) as published.
        aliases: other accepted prefixes (e.g. 'efficientformer_v2_').
    """
    name: str
    prefix: str
    backbone_type: str
    builder: str
    timm_prefix: str
    paper: Dict[str, Tuple[float, float]]
    aliases: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    """One buildable model of the zoo."""
    name: str
    family: Family
    arch: str

    @property
    def timm_name(self) -> str:
        return self.family.timm_prefix + self.arch

    @property
    def paper_params_m(self) -> float:
        return self.family.paper[self.arch][0]

    @property
    def paper_gmacs(self) -> float:
        return self.family.paper[self.arch][1]


FAMILIES: List[Family] = [
    # EfficientFormer (NeurIPS 2022), Table 1; params include the distillation head.
    Family('EfficientFormer', 'efficientformer_', 'EfficientFormer',
           'efficientformer_classifier', 'efficientformer_',
           {'l1': (12.3, 1.3), 'l3': (31.3, 3.9), 'l7': (82.1, 10.2)}),
    # EfficientFormerV2 (ICCV 2023), Table 2.
    Family('EfficientFormerV2', 'efficientformerv2_', 'EfficientFormerV2',
           'efficientformer_v2_classifier', 'efficientformerv2_',
           {'s0': (3.5, 0.40), 's1': (6.1, 0.65), 's2': (12.6, 1.25), 'l': (26.1, 2.56)},
           aliases=('efficientformer_v2_',)),
    # EfficientViT (CVPR 2023), Table 1 (Flops there are MACs: M0 79M ... M5 522M).
    Family('EfficientViT', 'efficientvit_', 'EfficientViT', 'efficientvit_classifier',
           'efficientvit_',
           {'m0': (2.3, 0.079), 'm1': (3.0, 0.167), 'm2': (4.2, 0.201), 'm3': (6.9, 0.263),
            'm4': (8.8, 0.299), 'm5': (12.4, 0.522)}),
]


def register_family(family: Family) -> Family:
    """Add a family to the zoo (replacing one of the same name)."""
    FAMILIES[:] = [f for f in FAMILIES if f.name != family.name] + [family]
    return family


def variants(family: Optional[str] = None) -> List[Variant]:
    """All variants, optionally of one family (by its display name)."""
    out = []
    for fam in FAMILIES:
        if family is None or fam.name == family:
            out.extend(Variant(fam.prefix + arch, fam, arch) for arch in fam.paper)
    return out


def variant_names() -> List[str]:
    return [v.name for v in variants()]


def get_variant(name: str) -> Variant:
    """Look a variant up by name (timm spelling or an alias); clear error otherwise."""
    key = name.lower().replace('-', '_')
    for fam in FAMILIES:
        for prefix in (fam.prefix,) + fam.aliases:
            if key.startswith(prefix) and key[len(prefix):] in fam.paper:
                arch = key[len(prefix):]
                return Variant(fam.prefix + arch, fam, arch)
    raise ValueError(f'unknown model name {name!r}; known models are {variant_names()} '
                     '(or pass a config file path)')


def is_variant_name(name: str) -> bool:
    try:
        get_variant(name)
    except ValueError:
        return False
    return True


def _find_in_models(attr: str) -> Optional[Callable]:
    import mmeff.models as models
    found = getattr(models, attr, None)
    if found is not None:
        return found
    for info in pkgutil.walk_packages(models.__path__, models.__name__ + '.'):
        module = importlib.import_module(info.name)
        found = getattr(module, attr, None)
        if callable(found):
            return found
    return None


class FamilyUnavailableError(ValueError):
    """The family's code (builder or backbone) is not part of this installation yet."""


def family_available(family: Family) -> bool:
    return _find_in_models(family.builder) is not None


def build_classifier(name: str) -> nn.Module:
    """Build the classification model of a variant (random init, eval mode)."""
    variant = get_variant(name)
    builder = _find_in_models(variant.family.builder)
    if builder is None:
        raise FamilyUnavailableError(
            f'{variant.family.name} is not available in this installation: mmeff.models has '
            f'no {variant.family.builder}() (the family has not been merged yet)')
    return builder(variant.arch).eval()


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build the dense backbone of a variant (every stage output unless told otherwise)."""
    from mmeff.registry import MODELS
    import mmeff.models  # noqa: F401  (registers the families)
    variant = get_variant(name)
    if MODELS.get(variant.family.backbone_type) is None:
        raise FamilyUnavailableError(
            f'{variant.family.name} is not available in this installation: no backbone '
            f'mmeff.{variant.family.backbone_type} is registered (not merged yet)')
    cfg = dict(type=variant.family.backbone_type, arch=variant.arch, **kwargs)
    return MODELS.build(cfg).eval()


@dataclass
class ZooStatus:
    """Which families can be built right now (for tools and reports)."""
    available: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


def zoo_status() -> ZooStatus:
    status = ZooStatus()
    for fam in FAMILIES:
        (status.available if family_available(fam) else status.missing).append(fam.name)
    return status
