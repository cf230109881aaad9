"""Model factories the benchmark can measure, registered by name.

A :class:`BenchModel` says how to build a module mapping an image batch to its outputs, at what
input size, in which group it is plotted, and what the paper reports. The defaults are mmeff's
variants (the zoo's, group = family), timm's implementations of the same variants (the
reference), three reference CNNs, the dense backbone of every variant (``backbone/<variant>``,
every stage output; e.g. at a detection size with ``--shape 800 1216``) and the Semantic FPN
segmentors of a config directory (:mod:`mmeff.benchmark.segmentors`). Other developers add
entries without touching the tool, e.g. a segmentor measured in images/s at 512x512::

    register_bench_model(BenchModel(
        name='semfpn_efficientformer_l1', group='Semantic FPN', task='segmentor',
        input_hw=(512, 512), build=lambda: SegmentorPart(build_my_segmentor())))

Every row the benchmark writes carries images/s next to the latency.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from mmeff.benchmark.segmentors import DEFAULT_CONFIG_DIR, register_segmentors
from mmeff.models.zoo import (build_backbone, build_classifier, get_variant, is_variant_name,
                              variants)


@dataclass
class BenchModel:
    """One measurable model.

    Args:
        name: unique key ('efficientformer_l1', 'timm/efficientformer_l1', 'timm/resnet50',
            'backbone/efficientformer_l1', 'semfpn_l1').
        group: plot/table group ('EfficientFormer', 'timm', 'CNN reference', ...).
        build: returns the module (random init is fine: speed does not depend on weights).
        input_hw: default input size.
        task: 'classifier', 'segmentor', ... (informational).
        paper_params_m / paper_gmacs: published figures, if any.
        counterpart: for a reference implementation, the name of the mmeff model it mirrors.
    """
    name: str
    group: str
    build: Callable[[], nn.Module]
    input_hw: Tuple[int, int] = (224, 224)
    task: str = 'classifier'
    paper_params_m: Optional[float] = None
    paper_gmacs: Optional[float] = None
    counterpart: Optional[str] = None


BENCH_MODELS: Dict[str, BenchModel] = {}
REFERENCE_CNNS = ('mobilenetv2_100', 'efficientnet_b0', 'resnet50')
#: published params (M) / GMACs of the reference CNNs (EfficientFormer Table 1)
_REFERENCE_PAPER = {'mobilenetv2_100': (3.5, 0.3), 'efficientnet_b0': (5.3, 0.4),
                    'resnet50': (25.5, 4.1)}


def register_bench_model(model: BenchModel) -> BenchModel:
    BENCH_MODELS[model.name] = model
    return model


def _timm_factory(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm
        return timm.create_model(name, pretrained=False).eval()
    return build


def _ours_factory(name: str) -> Callable[[], nn.Module]:
    return lambda: build_classifier(name)


def _backbone_factory(name: str) -> Callable[[], nn.Module]:
    return lambda: build_backbone(name)


def _register_defaults() -> None:
    for v in variants():
        if v.name not in BENCH_MODELS:
            register_bench_model(BenchModel(v.name, v.family.name, _ours_factory(v.name),
                                            paper_params_m=v.paper_params_m,
                                            paper_gmacs=v.paper_gmacs))
        timm_key = f'timm/{v.timm_name}'
        if timm_key not in BENCH_MODELS:
            register_bench_model(BenchModel(timm_key, 'timm', _timm_factory(v.timm_name),
                                            paper_params_m=v.paper_params_m,
                                            paper_gmacs=v.paper_gmacs, counterpart=v.name))
    for cnn in REFERENCE_CNNS:
        key = f'timm/{cnn}'
        if key not in BENCH_MODELS:
            params, gmacs = _REFERENCE_PAPER[cnn]
            register_bench_model(BenchModel(key, 'CNN reference', _timm_factory(cnn),
                                            paper_params_m=params, paper_gmacs=gmacs))
    for v in variants():
        key = f'backbone/{v.name}'
        if key not in BENCH_MODELS:
            register_bench_model(BenchModel(key, f'{v.family.name} backbone',
                                            _backbone_factory(v.name), task='backbone'))


#: the config directory the registered segmentors come from, their names, and why none
#: could be registered (a missing directory)
_SEGMENTORS: Dict[str, object] = {'dir': None, 'names': [], 'error': None}


def _register_segmentors(config_dir: Union[str, Path]) -> None:
    resolved = os.path.abspath(config_dir)
    if _SEGMENTORS['dir'] == resolved:
        return
    for name in _SEGMENTORS['names']:
        BENCH_MODELS.pop(name, None)
    try:
        names, error = register_segmentors(register_bench_model, BenchModel, config_dir), None
    except ValueError as err:
        names, error = [], err
    _SEGMENTORS.update(dir=resolved, names=names, error=error)


def bench_models(config_dir: Optional[Union[str, Path]] = None) -> Dict[str, BenchModel]:
    """Every registered model; the segmentors are those of ``config_dir`` (None: those
    registered before, else those of the default ``configs``)."""
    _register_defaults()
    _register_segmentors(config_dir if config_dir is not None else
                         _SEGMENTORS['dir'] or DEFAULT_CONFIG_DIR)
    return BENCH_MODELS


#: selection shortcuts accepted by the tool
SELECTIONS = {
    'ours': lambda m: not m.name.startswith('timm/') and m.task == 'classifier',
    'timm': lambda m: m.group == 'timm',
    'refs': lambda m: m.group == 'CNN reference',
    'all': lambda m: m.task == 'classifier',
    'segmentors': lambda m: m.task == 'segmentor',
    'backbones': lambda m: m.task == 'backbone',
}


def _is_segmentor_name(name: str) -> bool:
    return name == 'segmentors' or name.startswith(('semfpn_', 'Semantic FPN'))


def _zoo_spelling(name: str) -> str:
    """``name`` with a zoo alias replaced by the zoo's name (efficientformer_v2_s0 ->
    efficientformerv2_s0, also after 'backbone/')."""
    prefix = 'backbone/' if name.startswith('backbone/') else ''
    rest = name[len(prefix):]
    return prefix + get_variant(rest).name if is_variant_name(rest) else name


def select(names: List[str],
           config_dir: Union[str, Path] = DEFAULT_CONFIG_DIR) -> List[BenchModel]:
    """Resolve names and shortcuts ('ours', 'timm', 'refs', 'all', 'backbones', 'segmentors',
    a group name) in order; segmentors come from ``config_dir``."""
    registry = bench_models(config_dir)
    out: List[BenchModel] = []
    for name in names:
        if _SEGMENTORS['error'] is not None and _is_segmentor_name(name):
            raise ValueError(str(_SEGMENTORS['error']))
        if name in SELECTIONS:
            picked = [m for m in registry.values() if SELECTIONS[name](m)]
        elif name in registry:
            picked = [registry[name]]
        elif f'timm/{name}' in registry:
            picked = [registry[f'timm/{name}']]
        elif _zoo_spelling(name) in registry:
            picked = [registry[_zoo_spelling(name)]]
        else:
            picked = [m for m in registry.values() if m.group == name]
            if not picked:
                raise ValueError(f'unknown benchmark model {name!r}; known: '
                                 f'{sorted(registry)} or one of {sorted(SELECTIONS)} or a '
                                 f'group {sorted({m.group for m in registry.values()})}')
        out.extend(m for m in picked if m not in out)
    return out
