"""The model zoo as data: every variant of every family, how to build it, and the paper's figures.

The variants of a family are the names of its arch table (``arch.py``: ``ARCH_SETTINGS`` /
``EFFICIENTVIT_ARCHS``, the ``arch_zoo`` of its registered backbone class): nothing here lists
them again, so a variant added to a table is in the zoo, the benchmark and the tools at once.

Names: ``<prefix><arch>``, timm's spelling so the two line up — ``efficientformer_l1``,
``efficientformerv2_s0``, ``efficientvit_m0``. That is the one spelling of the zoo, the
benchmark and the command lines; ``efficientformer_v2_s0`` (and any case, ``-`` for ``_``) is
accepted as an alias. Config files name a variant by its short key (:attr:`Variant.config_key`:
``l1``, ``v2s0``, ``m4``, as in ``configs/semfpn_v2s0_ade20k.py``).

Adding a family means adding one :class:`Family` entry (or calling :func:`register_family`).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import nn


@dataclass(frozen=True)
class Family:
    """One backbone family.

    Args:
        name: display name ('EfficientFormer').
        prefix: model-name prefix; a variant is ``prefix + arch`` ('efficientformer_' + 'l1').
        backbone_type: mmeff registry name of the dense backbone ('EfficientFormer'); its
            class's ``arch_zoo`` (the family's arch table) lists the variants.
        builder: name of the function in ``mmeff.models.classifiers`` that builds the
            classifier, called as ``builder(arch)``.
        timm_prefix: prefix of timm's equivalent model names (the numerical reference).
        paper: arch -> (params in M, GMACs at 224x224) as published.
        aliases: other accepted prefixes (e.g. 'efficientformer_v2_').
        config_prefix: prefix of the variant's short key in config file names ('v2').
    """
    name: str
    prefix: str
    backbone_type: str
    builder: str
    timm_prefix: str
    paper: Dict[str, Tuple[float, float]]
    aliases: Tuple[str, ...] = ()
    config_prefix: str = ''


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
    def config_key(self) -> str:
        """How config file names spell the variant ('l1', 'v2s0', 'm4')."""
        return self.family.config_prefix + self.arch

    @property
    def paper_params_m(self) -> Optional[float]:
        return self.family.paper.get(self.arch, (None, None))[0]

    @property
    def paper_gmacs(self) -> Optional[float]:
        return self.family.paper.get(self.arch, (None, None))[1]


FAMILIES: List[Family] = [
    # EfficientFormer (NeurIPS 2022), Table 1; params include the distillation head.
    Family('EfficientFormer', 'efficientformer_', 'EfficientFormer',
           'efficientformer_classifier', 'efficientformer_',
           {'l1': (12.3, 1.3), 'l3': (31.3, 3.9), 'l7': (82.1, 10.2)}),
    # EfficientFormerV2 (ICCV 2023), Table 2.
    Family('EfficientFormerV2', 'efficientformerv2_', 'EfficientFormerV2',
           'efficientformer_v2_classifier', 'efficientformerv2_',
           {'s0': (3.5, 0.40), 's1': (6.1, 0.65), 's2': (12.6, 1.25), 'l': (26.1, 2.56)},
           aliases=('efficientformer_v2_',), config_prefix='v2'),
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


class FamilyUnavailableError(ValueError):
    """A registered family's code (classifier builder or backbone) cannot be found."""


def _backbone_class(family: Family) -> Optional[type]:
    from mmeff.registry import MODELS
    import mmeff.models  # noqa: F401  (registers the families)
    return MODELS.get(family.backbone_type)


def _builder(family: Family):
    from mmeff.models import classifiers
    return getattr(classifiers, family.builder, None)


def arch_names(family: Family) -> List[str]:
    """The variants of ``family``: the names of its backbone's arch table, in table order
    (none while its backbone is not registered)."""
    backbone = _backbone_class(family)
    return list(backbone.arch_zoo) if backbone is not None else []


def family_available(family: Family) -> bool:
    return _builder(family) is not None and _backbone_class(family) is not None


def variants(family: Optional[str] = None) -> List[Variant]:
    """All variants, optionally of one family (by its display name)."""
    return [Variant(fam.prefix + arch, fam, arch) for fam in FAMILIES
            if family is None or fam.name == family for arch in arch_names(fam)]


def variant_names() -> List[str]:
    return [v.name for v in variants()]


def _split(name: str, families: List[Family]) -> Optional[Tuple[Family, str]]:
    key = name.lower().replace('-', '_')
    for fam in families:
        for prefix in (fam.prefix,) + fam.aliases:
            if key.startswith(prefix):
                return fam, key[len(prefix):]
    return None


def get_variant(name: str) -> Variant:
    """Look a variant up by name (timm spelling or an alias); clear error otherwise."""
    for fam in FAMILIES:
        found = _split(name, [fam])
        if found and found[1] in arch_names(fam):
            return Variant(fam.prefix + found[1], fam, found[1])
    raise ValueError(f'unknown model name {name!r}; known models are {variant_names()} '
                     '(or pass a config file path)')


def is_variant_name(name: str) -> bool:
    try:
        get_variant(name)
    except ValueError:
        return False
    return True


def _family_of(name: str) -> Family:
    """The family of ``name``; one registered without its code is named by the error, not
    reported as an unknown model."""
    missing = _split(name, [f for f in FAMILIES if _backbone_class(f) is None])
    return missing[0] if missing else get_variant(name).family


def _require_backbone(family: Family) -> None:
    if _backbone_class(family) is None:
        raise FamilyUnavailableError(
            f'{family.name} is not available: no backbone mmeff.{family.backbone_type} is '
            'registered')


def build_classifier(name: str) -> nn.Module:
    """Build the classification model of a variant (random init, eval mode)."""
    family = _family_of(name)
    builder = _builder(family)
    if builder is None:
        raise FamilyUnavailableError(
            f'{family.name} is not available: mmeff.models.classifiers has no '
            f'{family.builder}()')
    _require_backbone(family)
    return builder(get_variant(name).arch).eval()


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build the dense backbone of a variant (every stage output unless told otherwise)."""
    from mmeff.registry import MODELS
    family = _family_of(name)
    _require_backbone(family)
    cfg = dict(type=family.backbone_type, arch=get_variant(name).arch, **kwargs)
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
