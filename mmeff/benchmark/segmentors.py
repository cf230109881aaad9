"""Semantic FPN segmentors for ``tools/benchmark.py``: each variant's ADE20K config next to MMSeg's
ResNet-50 Semantic FPN, measured in images/s at 512x512.

    python tools/benchmark.py segmentors --backends eager fused --threads 1 --runs 5

selects every ``semfpn_*`` model and makes ``semfpn_resnet50`` the anchor: it is timed in the same
round-robin session as each variant, so each ratio compares two models measured side by side.
A segmentor is built from its config (``configs/semfpn_<variant>_ade20k.py``, or MMSeg's
``sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py``) with random weights (speed does not depend on
them) and wrapped in :class:`~mmeff.deploy.parts.SegmentorPart`: backbone + FPN + FPN head +
the bilinear resize of the logits to the input size, i.e. what inference runs per image.
"""
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from torch import nn

#: variant key -> the config it is built from (configs/semfpn_<key>_ade20k.py)
SEGMENTOR_VARIANTS = ('l1', 'l3', 'l7', 'v2s0', 'v2s1', 'v2s2', 'v2l', 'm4')
SEGMENTOR_ANCHOR = 'semfpn_resnet50'
REFERENCE_CONFIG = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'


def segmentor_config(name: str):
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
    path = CONFIG_DIR / f'semfpn_{variant}_ade20k.py'
    if variant not in SEGMENTOR_VARIANTS or not path.is_file():
        raise ValueError(f'unknown segmentor {name!r}; known: '
                         f'{[f"semfpn_{v}" for v in SEGMENTOR_VARIANTS] + [SEGMENTOR_ANCHOR]}')
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None  # random weights: no pretrained file needed
    return cfg


def build_segmentor(name: str) -> nn.Module:
    """The EncoderDecoder of ``name`` (eval mode, random init, SyncBN reverted to BN)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mmeff.models  # noqa: F401  (registers the backbones and necks)
    cfg = segmentor_config(name)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'), warnings.catch_warnings():
        # MMSeg's loss builders warn about their own deprecations on every build
        warnings.filterwarnings('ignore', message='.*(build_loss|avg_non_ignore).*')
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def _factory(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from mmeff.deploy.parts import SegmentorPart
        return SegmentorPart(build_segmentor(name)).eval()
    return build


def register_segmentors(register: Callable, bench_model_cls) -> None:
    """Add ``semfpn_<variant>`` and the ``semfpn_resnet50`` anchor to the benchmark registry."""
    register(bench_model_cls(SEGMENTOR_ANCHOR, 'Semantic FPN reference',
                             _factory(SEGMENTOR_ANCHOR), input_hw=(512, 512), task='segmentor'))
    for variant in SEGMENTOR_VARIANTS:
        name = f'semfpn_{variant}'
        register(bench_model_cls(name, 'Semantic FPN', _factory(name), input_hw=(512, 512),
                                 task='segmentor'))


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
