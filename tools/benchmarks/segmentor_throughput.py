#!/usr/bin/env python
"""Semantic FPN segmentor throughput at 512x512: every mmeff variant next to MMSeg's ResNet-50.

    python tools/benchmarks/segmentor_throughput.py [--runs 5] [--threads 2] [--batch 1]
        [--variants l1 l3 ...] [--deploy] [--out-dir work_dirs/segmentor_throughput]

Each segmentor is built from its config (ours: ``configs/semfpn_<variant>_ade20k.py``; the
reference: MMSeg's ``sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py``) with random weights (speed
does not depend on them), in eval mode, and timed on ``encode_decode``: backbone + FPN + head +
the upsampling of the logits to 512x512, i.e. what ``tools/test.py`` runs per image (without
data loading and metric). Timing is interleaved: each round runs every model once, so load from
other processes hits all of them alike; the median over rounds gives images/s, and the ratio to
the ResNet-50 segmentor measured in the same run is printed next to it.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = ('l1', 'l3', 'l7', 'v2s0', 'v2s1', 'v2s2', 'v2l', 'm4')
REFERENCE = 'resnet50'
REFERENCE_CONFIG = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def build_segmentor(name: str, deploy: bool = False) -> torch.nn.Module:
    """A Semantic FPN segmentor (eval mode, random init) for ``name`` in VARIANTS or REFERENCE."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    if name == REFERENCE:
        import tempfile
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(f'_base_ = {REFERENCE_CONFIG!r}\nmodel = dict(pretrained=None)\n')
        try:
            cfg = Config.fromfile(f.name)
        finally:
            os.unlink(f.name)
    else:
        path = REPO / 'configs' / f'semfpn_{name}_ade20k.py'
        if not path.is_file():
            raise ValueError(f'no config {path} for variant {name!r}; variants: {VARIANTS}')
        cfg = Config.fromfile(str(path))
        cfg.model.backbone.init_cfg = None
        import importlib
        for module in cfg.custom_imports['imports']:
            importlib.import_module(module)
    init_default_scope('mmseg')
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    if deploy and name != REFERENCE and hasattr(model.backbone, 'switch_to_deploy'):
        model.backbone.switch_to_deploy()
    return model


def make_call(model: torch.nn.Module, batch: int, hw) -> Callable[[], torch.Tensor]:
    x = torch.randn(batch, 3, *hw)
    metas = [dict(img_shape=tuple(hw), ori_shape=tuple(hw), pad_shape=tuple(hw))] * batch
    return lambda: model.encode_decode(x, metas)


def interleaved(calls: Dict[str, Callable], runs: int, warmup: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for fn in calls.values():
            for _ in range(warmup):
                fn()
        for r in range(runs):
            for name, fn in calls.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            print(f'[throughput] round {r + 1}/{runs} done', flush=True)
    return times


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS))
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--size', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'))
    p.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    p.add_argument('--deploy', action='store_true',
                   help='fold BatchNorms / freeze biases of our backbones first')
    p.add_argument('--out-dir', default='work_dirs/segmentor_throughput')
    args = p.parse_args(argv)
    if min(args.runs, args.batch, args.threads) < 1 or args.warmup < 0:
        p.error('--runs, --batch and --threads must be >= 1, --warmup >= 0')
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f'unknown variants {bad}; choose from {list(VARIANTS)}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # MMSeg's loss builders warn about their own deprecations on every build
    warnings.filterwarnings('ignore', message='.*(build_loss|avg_non_ignore).*')
    names = [REFERENCE] + list(args.variants)
    calls, params = {}, {}
    for name in names:
        model = build_segmentor(name, deploy=args.deploy)
        params[name] = sum(p.numel() for p in model.parameters()) / 1e6
        calls[name] = make_call(model, args.batch, args.size)
        print(f'[throughput] built {name} ({params[name]:.1f} M parameters)', flush=True)
    times = interleaved(calls, args.runs, args.warmup)

    meta = dict(cpu=cpu_name(), threads=args.threads, batch=args.batch,
                input=f'{args.batch}x3x{args.size[0]}x{args.size[1]}', runs=args.runs,
                warmup=args.warmup, deploy=args.deploy, torch=torch.__version__,
                measured='encode_decode (backbone + FPN + FPNHead + upsampling to input size)',
                note='the CPU may be shared with other jobs: absolute times are noisy, the '
                     'ratios compare models measured side by side in this run')
    ref = statistics.median(times[REFERENCE])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append(dict(model=f'semfpn_{name}', params_m=round(params[name], 2),
                         median_ms=round(med * 1e3, 1),
                         images_per_s=round(args.batch / med, 3),
                         speed_vs_resnet50=round(ref / med, 2)))
    print(f'\nSemantic FPN throughput, {meta["input"]}, {meta["cpu"]}, {args.threads} threads, '
          f'median of {args.runs} interleaved runs'
          + (', our backbones fused' if args.deploy else ''))
    print(f'{"segmentor":<18} {"params M":>9} {"ms/batch":>9} {"images/s":>9} {"vs R50":>7}')
    for r in rows:
        print(f'{r["model"]:<18} {r["params_m"]:>9.1f} {r["median_ms"]:>9.1f} '
              f'{r["images_per_s"]:>9.2f} {r["speed_vs_resnet50"]:>6.2f}x')
    print(meta['note'])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'segmentor_throughput.json').write_text(
        json.dumps(dict(meta=meta, rows=rows), indent=2) + '\n')
    with open(out / 'segmentor_throughput.csv', 'w') as f:
        f.write(','.join(rows[0]) + '\n')
        for r in rows:
            f.write(','.join(str(v) for v in r.values()) + '\n')
    print(f'wrote {out / "segmentor_throughput.json"} and .csv')
    return 0


if __name__ == '__main__':
    sys.exit(main())
