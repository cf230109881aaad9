#!/usr/bin/env python
"""Single-thread CPU latency of EfficientViT-M4: mmeff fused vs timm, measured in one run.

    python tools/benchmarks/efficientvit_latency.py [--runs 30] [--warmup 5] [--out-dir DIR]

Both models hold the same weights (timm's random init with randomized BN statistics, copied
into ours through the checkpoint converter) and are checked to agree before timing. Timing is
interleaved: every round runs each model once, so load from other processes hits all alike;
medians over rounds are reported as wall-clock time and, because shared machines preempt,
also as the thread's CPU time. Printed: timm as created (the reference), timm with
channels-last input (context), ours unfused, ours fused (``mmeff.models.layers.fusion``: BNs folded,
biases cached) and ours fused with biases frozen for 224x224, plus the ratios. With --out-dir
it also writes JSON and a PNG bar chart.
"""
import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmeff.checkpoint import load_pretrained  # noqa: E402
from mmeff.models.backbones.efficientvit.checkpoint import EfficientViTConverter  # noqa: E402
from mmeff.deploy import fuse  # noqa: E402
from mmeff.models.classifiers import efficientvit_classifier  # noqa: E402
from mmeff.testing import randomize_  # noqa: E402

SHAPE = (1, 3, 224, 224)


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def interleaved(cases: Dict[str, Callable[[], object]], runs: int,
                warmup: int) -> Dict[str, Dict[str, List[float]]]:
    """Per case: wall-clock and thread-CPU milliseconds of every timed round."""
    times = {name: {'wall': [], 'cpu': []} for name in cases}
    with torch.inference_mode():
        for fn in cases.values():
            for _ in range(warmup):
                fn()
        for _ in range(runs):
            for name, fn in cases.items():
                wall, cpu = time.perf_counter(), time.thread_time()
                fn()
                times[name]['cpu'].append((time.thread_time() - cpu) * 1e3)
                times[name]['wall'].append((time.perf_counter() - wall) * 1e3)
    return times


def median(values: List[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=30, help='timed rounds (>= 10)')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--out-dir', default=None, help='write JSON + PNG here')
    args = parser.parse_args()
    if args.runs < 10:
        parser.error('--runs must be >= 10')
    import timm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    timm_model = randomize_(timm.create_model('efficientvit_m4', pretrained=False)).eval()
    ours = efficientvit_classifier('m4').eval()
    load_pretrained(ours, timm_model.state_dict(), EfficientViTConverter(), prefix='',
                    arch_name='m4')
    fused = fuse(copy.deepcopy(ours))
    frozen = fuse(copy.deepcopy(ours), input_shape=SHAPE)

    x = torch.randn(*SHAPE)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = timm_model(x)
        diffs = {name: ((m(x) - ref).abs().max() / ref.abs().max()).item()
                 for name, m in (('unfused', ours), ('fused', fused), ('frozen', frozen))}
    cases = {
        'timm efficientvit_m4': lambda: timm_model(x),
        'timm, channels-last input': lambda: timm_model(x_cl),
        'mmeff unfused (eval)': lambda: ours(x),
        'mmeff fused': lambda: fused(x),
        'mmeff fused, biases frozen': lambda: frozen(x),
    }
    times = interleaved(cases, args.runs, args.warmup)
    med = {name: {k: median(v) for k, v in t.items()} for name, t in times.items()}

    ref_name = 'timm efficientvit_m4'
    print(f'machine: {cpu_name()}, {platform.machine()}; torch {torch.__version__}, '
          f'timm {timm.__version__}; torch threads: {torch.get_num_threads()}')
    print(f'input: {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}x{SHAPE[3]} (batch {SHAPE[0]}), float32; '
          f'{args.warmup} warm-up + {args.runs} timed rounds, interleaved; medians')
    print('max |logits - timm| / max |timm|: '
          + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
    print(f'{"model":<30}{"wall ms":>10}{"cpu ms":>10}{"timm/this (wall)":>19}'
          f'{"timm/this (cpu)":>18}')
    for name, m in med.items():
        print(f'{name:<30}{m["wall"]:>10.2f}{m["cpu"]:>10.2f}'
              f'{med[ref_name]["wall"] / m["wall"]:>18.2f}x{med[ref_name]["cpu"] / m["cpu"]:>17.2f}x')
    speedup = med[ref_name]['wall'] / med['mmeff fused']['wall']
    print(f'RESULT: mmeff fused EfficientViT-M4 is {speedup:.2f}x timm efficientvit_m4 '
          f'(wall-clock median, target >= 1.2x)')

    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        record = dict(machine=cpu_name(), torch=torch.__version__, timm=timm.__version__,
                      threads=torch.get_num_threads(), input=list(SHAPE), runs=args.runs,
                      warmup=args.warmup, rel_diff_vs_timm=diffs, median_ms=med,
                      all_ms=times, speedup_fused_vs_timm_wall=speedup)
        (out / 'efficientvit_latency.json').write_text(json.dumps(record, indent=2))
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3))
        names = list(med)
        ax.barh(names, [med[n]['wall'] for n in names])
        ax.invert_yaxis()
        ax.set_xlabel('median latency, ms (1 thread, 1x3x224x224)')
        ax.set_title(f'EfficientViT-M4 on {cpu_name()}', fontsize=9)
        fig.tight_layout()
        fig.savefig(out / 'efficientvit_latency.png', dpi=120)
        print(f'wrote {out / "efficientvit_latency.json"} and {out / "efficientvit_latency.png"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
