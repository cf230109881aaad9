"""Single-thread CPU latency of mmeff's fused EfficientFormerV2 classifier vs timm's, in one run.

Both models get the same (random-init) weights, are checked to agree, and are timed interleaved
(one run of each per round, so load from other processes hits both alike); the script prints the
median over ``--runs`` rounds after ``--warmup`` rounds, and the ratio timm / mmeff.

    PYTHONPATH=. python tools/benchmarks/efficientformer_v2_latency.py [--arch s0] [--runs 30]

Extra rows show where the gain comes from: mmeff unfused (eval: channels_last, BNs not folded)
and timm fed a channels_last input.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from mmeff.checkpoint import load_pretrained  # noqa: E402
from mmeff.models.backbones.efficientformer_v2.checkpoint import EfficientFormerV2Converter  # noqa: E402
from mmeff.deploy import fuse  # noqa: E402
from mmeff.models.heads import efficientformer_v2_classifier  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='s0', choices=['s0', 's1', 's2', 'l'])
    p.add_argument('--size', type=int, default=224, help='input H = W')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--runs', type=int, default=30, help='timed rounds (median reported)')
    p.add_argument('--json', help='also write the results to this JSON file')
    return p.parse_args()


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    args = parse_args()
    import timm
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = timm.create_model(f'efficientformerv2_{args.arch}', pretrained=False).eval()
    models = []
    for _ in range(2):
        model = efficientformer_v2_classifier(args.arch)
        load_pretrained(model, ref.state_dict(), EfficientFormerV2Converter(), prefix='')
        models.append(model.eval())
    ours_unfused, ours_fused = models[0], fuse(models[1])

    x = torch.randn(args.batch, 3, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    candidates: Dict[str, Callable[[], object]] = {
        'mmeff fused': lambda: ours_fused(x),
        f'timm efficientformerv2_{args.arch}': lambda: ref(x),
        'mmeff unfused (eval)': lambda: ours_unfused(x),
        'timm, channels_last input': lambda: ref(x_cl),
    }
    with torch.inference_mode():
        expected = ref(x)
        got = ours_fused(x)
        rel = ((got - expected).abs().max() / expected.abs().max()).item()
        for _ in range(args.warmup):
            for fn in candidates.values():
                fn()
        times: Dict[str, List[float]] = {name: [] for name in candidates}
        for _ in range(args.runs):
            for name, fn in candidates.items():
                times[name].append(timed(fn))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med[f'timm efficientformerv2_{args.arch}']

    print(f'EfficientFormerV2-{args.arch.upper()} CPU latency on {cpu_name()} '
          f'({os.cpu_count()} cores visible), torch {torch.__version__}, timm {timm.__version__}')
    print(f'threads={torch.get_num_threads()} batch={args.batch} input=3x{args.size}x{args.size} '
          f'fp32, warm-up {args.warmup} rounds, median of {args.runs} interleaved rounds')
    print(f'max relative logit difference mmeff fused vs timm: {rel:.2e}')
    print(f'{"model":34s} {"median ms":>10s} {"min ms":>8s} {"timm / model":>12s}')
    for name, ts in times.items():
        print(f'{name:34s} {med[name]:10.2f} {min(ts):8.2f} {base / med[name]:11.2f}x')
    speedup = base / med['mmeff fused']
    print(f'speed-up of mmeff fused over timm: {speedup:.2f}x (target >= 1.2x)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(arch=args.arch, size=args.size, batch=args.batch,
                           threads=torch.get_num_threads(), runs=args.runs, warmup=args.warmup,
                           median_ms=med, times_ms=times, speedup=speedup,
                           max_rel_diff=rel), f, indent=1)


if __name__ == '__main__':
    main()
