#!/usr/bin/env python
"""Single-thread CPU latency of EfficientFormer-L1: mmeff (eager and fused) vs timm, one run.

    python tools/benchmarks/efficientformer_latency.py [--runs 30] [--dense-runs 10] [--out-dir DIR]

All models hold the same weights (timm's random init, copied into ours). Timing is interleaved:
each round runs every model of a group (224 / 800x1216) once, so load from other processes hits
them alike; the median over rounds is reported. Prints the ratio timm / ours-fused at 1x3x224x224 (the target
is >= 1.2x), timm with channels-last input for context, and our L1 backbone (4 dense outputs)
at 1x3x800x1216. With --out-dir it also writes JSON and a PNG bar chart.
"""
import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmeff.checkpoint import load_pretrained  # noqa: E402
from mmeff.models.backbones.efficientformer.checkpoint import EfficientFormerConverter  # noqa: E402
from mmeff.deploy import fuse  # noqa: E402
from mmeff.models.backbones import EfficientFormer  # noqa: E402
from mmeff.models.classifiers import efficientformer_classifier  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def interleaved_times(cases: Dict[str, Callable[[], object]], runs: int,
                        warmup: int) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for fn in cases.values():
            for _ in range(warmup):
                fn()
        for _ in range(runs):
            for name, fn in cases.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=30, help='timed rounds at 224 (>= 10)')
    parser.add_argument('--dense-runs', type=int, default=10,
                        help='timed rounds at 800x1216 (>= 10)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--out-dir', default=None, help='write JSON + PNG here')
    args = parser.parse_args()
    if min(args.runs, args.dense_runs) < 10:
        parser.error('--runs and --dense-runs must be >= 10')
    import timm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    timm_model = timm.create_model('efficientformer_l1', pretrained=False).eval()
    ours = efficientformer_classifier('l1').eval()
    load_pretrained(ours, timm_model.state_dict(), EfficientFormerConverter(), prefix='')
    ours_fused = fuse(copy.deepcopy(ours))
    backbone = EfficientFormer('l1').eval()
    backbone.load_checkpoint(timm_model.state_dict())  # dense-only output norms stay fresh
    backbone_fused = fuse(copy.deepcopy(backbone))

    x224 = torch.randn(1, 3, 224, 224)
    x224_cl = x224.contiguous(memory_format=torch.channels_last)
    x_dense = torch.randn(1, 3, 800, 1216)
    with torch.inference_mode():
        ref = timm_model(x224)
        check = {'ours eager vs timm': rel_diff(ours(x224), ref),
                 'ours fused vs timm': rel_diff(ours_fused(x224), ref),
                 'backbone fused vs eager @800x1216': max(
                     rel_diff(a, b) for a, b in zip(backbone_fused(x_dense), backbone(x_dense)))}

    cases = {
        'timm efficientformer_l1 eager @224': lambda: timm_model(x224),
        'timm efficientformer_l1 eager channels_last @224': lambda: timm_model(x224_cl),
        'mmeff L1 classifier eager @224': lambda: ours(x224),
        'mmeff L1 classifier fused @224': lambda: ours_fused(x224),
    }
    dense_cases = {
        'mmeff L1 backbone eager @800x1216': lambda: backbone(x_dense),
        'mmeff L1 backbone fused @800x1216': lambda: backbone_fused(x_dense),
    }
    load_before = os.getloadavg()[0]
    times = interleaved_times(cases, args.runs, args.warmup)
    times.update(interleaved_times(dense_cases, args.dense_runs, 1))
    load_after = os.getloadavg()[0]
    medians = {name: statistics.median(v) for name, v in times.items()}

    print(f'machine: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, '
          f'timm {timm.__version__}; torch threads: {torch.get_num_threads()}; batch 1; '
          f'{args.runs} (224) / {args.dense_runs} (800x1216) interleaved rounds after warm-up; '
          f'median reported; 1-min load average {load_before:.2f} -> {load_after:.2f}')
    for name, value in check.items():
        print(f'max relative output difference, {name}: {value:.2e}')
    width = max(len(n) for n in medians)
    for name, value in medians.items():
        spread = f'(min {min(times[name]):.2f}, max {max(times[name]):.2f})'
        print(f'{name:<{width}}  {value:8.2f} ms  {spread}')
    ratio = medians['timm efficientformer_l1 eager @224'] / \
        medians['mmeff L1 classifier fused @224']
    ratio_cl = medians['timm efficientformer_l1 eager channels_last @224'] / \
        medians['mmeff L1 classifier fused @224']
    print(f'speed-up of mmeff fused L1 over timm eager efficientformer_l1 @224: {ratio:.2f}x '
          f'(target >= 1.2x: {"met" if ratio >= 1.2 else "NOT met"})')
    print(f'speed-up over timm eager with channels_last input @224 (context): {ratio_cl:.2f}x')

    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'efficientformer_latency.json').write_text(json.dumps(dict(
            cpu=cpu_name(), threads=1, runs=args.runs, dense_runs=args.dense_runs,
            medians_ms=medians, samples_ms=times,
            ratio_vs_timm=ratio, ratio_vs_timm_channels_last=ratio_cl, checks=check), indent=2))
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.barh(list(medians), list(medians.values()))
        ax.set_xlabel('median latency (ms), 1 thread')
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / 'efficientformer_latency.png', dpi=120)
        print(f'wrote {out / "efficientformer_latency.json"} and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
