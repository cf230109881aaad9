"""Semantic FPN segmentors for ``tools/benchmark.py``: each variant's ADE20K config next to MMSeg's
ResNet-50 Semantic FPN, measured in images/s at 512x512.

    python tools/benchmark.py segmentors --backends eager fused --threads 1 --runs 5

selects every ``semfpn_*`` model and makes ``semfpn_resnet50`` the anchor: it is timed in the same
round-robin session as each variant, so each ratio compares two models measured side by side.
The segmentors are the zoo variants that have a config ``<config dir>/semfpn_<key>_ade20k.py``
(``key``: :attr:`mmeff.models.zoo.Variant.config_key`, e.g. ``l1``, ``v2s0``, ``m4``; the
model is named ``semfpn_<key>`` like its file). The config directory is an explicit argument
(``tools/benchmark.py --config-dir``, default ``configs`` relative to the working directory):
the package does not look for the repository around its own files. The reference is MMSeg's
``sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py``. Every segmentor is built with random weights
(speed does not depend on them) and wrapped in :class:`~mmeff.deploy.parts.SegmentorPart`:
backbone + FPN + FPN head + the bilinear resize of the logits to the input size, i.e. what
inference runs per image.
"""
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Union

from torch import nn

from mmeff.models.zoo import variants

SEGMENTOR_ANCHOR = 'semfpn_resnet50'
REFERENCE_CONFIG = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
DEFAULT_CONFIG_DIR = 'configs'
PathLike = Union[str, Path]


def config_path(key: str, config_dir: PathLike) -> Path:
    return Path(config_dir) / f'semfpn_{key}_ade20k.py'


def check_config_dir(config_dir: PathLike) -> Path:
    """``config_dir`` as a Path; ValueError saying how to pass it when it is no directory."""
    directory = Path(config_dir)
    if not directory.is_dir():
        raise ValueError(
            f'config directory {str(config_dir)!r} not found (working directory '
            f'{os.getcwd()}): the Semantic FPN segmentors are built from its '
            'semfpn_<variant>_ade20k.py files; pass the repository\'s configs/ directory '
            '(tools/benchmark.py --config-dir DIR)')
    return directory


def segmentor_keys(config_dir: PathLike = DEFAULT_CONFIG_DIR) -> List[str]:
    """Config keys of the zoo variants that have a Semantic FPN config, in zoo order."""
    directory = check_config_dir(config_dir)
    return [v.config_key for v in variants() if config_path(v.config_key, directory).is_file()]


def segmentor_config(name: str, config_dir: PathLike = DEFAULT_CONFIG_DIR):
    """The mmengine Config of ``semfpn_<variant>`` or of the ResNet-50 reference."""
    from mmengine.config import Config
    if name == SEGMENTOR_ANCHOR:
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(f'_base_ = {REFERENCE_CONFIG!r}\nmodel = dict(pretrained=None)\n')
        try:
            return Config.fromfile(f.name)
        finally:
            os.unlink(f.name)
    variant = name[len('semfpn_'):] if name.startswith('semfpn_') else name
    known = segmentor_keys(config_dir)
    if variant not in known:
        raise ValueError(f'unknown segmentor {name!r}; known: '
                         f'{[f"semfpn_{v}" for v in known] + [SEGMENTOR_ANCHOR]}')
    cfg = Config.fromfile(str(config_path(variant, config_dir)))
    cfg.model.backbone.init_cfg = None  # random weights: no pretrained file needed
    return cfg


def build_segmentor(name: str, config_dir: PathLike = DEFAULT_CONFIG_DIR) -> nn.Module:
    """The EncoderDecoder of ``name`` (eval mode, random init, SyncBN reverted to BN)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mmeff.models  # noqa: F401  (registers the backbones and necks)
    cfg = segmentor_config(name, config_dir)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'), warnings.catch_warnings():
        # MMSeg's loss builders warn about their own deprecations on every build
        warnings.filterwarnings('ignore', message='.*(build_loss|avg_non_ignore).*')
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def _factory(name: str, config_dir: PathLike) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from mmeff.deploy.parts import SegmentorPart
        return SegmentorPart(build_segmentor(name, config_dir)).eval()
    return build


def register_segmentors(register: Callable, bench_model_cls, config_dir: PathLike) -> List[str]:
    """Add ``semfpn_<key>`` for every Semantic FPN config in ``config_dir`` and the
    ``semfpn_resnet50`` reference to the benchmark registry; returns the names added.
    Raises ValueError (before adding any) when ``config_dir`` is no directory."""
    keys = segmentor_keys(config_dir)
    register(bench_model_cls(SEGMENTOR_ANCHOR, 'Semantic FPN reference',
                             _factory(SEGMENTOR_ANCHOR, config_dir), input_hw=(512, 512),
                             task='segmentor'))
    for key in keys:
        register(bench_model_cls(f'semfpn_{key}', 'Semantic FPN',
                                 _factory(f'semfpn_{key}', config_dir), input_hw=(512, 512),
                                 task='segmentor'))
    return [SEGMENTOR_ANCHOR] + [f'semfpn_{key}' for key in keys]


def throughput_table(rows: Sequence, anchor: str = SEGMENTOR_ANCHOR) -> str:
    """Images/s of every segmentor row and its speed relative to the anchor's eager run in the
    same session (> 1: faster than the ResNet-50 segmentor)."""
    anchor_ms: Dict[int, float] = {r.session: r.median_ms for r in rows
                                   if r.model == anchor and r.backend == 'eager'
                                   and r.status == 'ok'}
    head = f'{"segmentor":20s} {"backend":>9s} {"params M":>9s} {"images/s":>9s} {"vs R50":>7s}'
    lines: List[str] = [head, '-' * len(head)]
    seen = set()
    for r in rows:
        if r.status != 'ok' or not r.model.startswith('semfpn_') or \
                (r.model == anchor and (r.model, r.backend) in seen):
            continue
        seen.add((r.model, r.backend))
        ref = anchor_ms.get(r.session)
        speed = f'{ref / r.median_ms:6.2f}x' if ref else f'{"-":>7s}'
        lines.append(f'{r.model:20s} {r.backend:>9s} {r.params_m:9.1f} '
                     f'{r.images_per_s:9.2f} {speed}')
    return '\n'.join(lines)
