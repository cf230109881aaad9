#!/usr/bin/env python
"""Parameters, MACs and latency of mmeff's models next to timm's and reference CNNs.

Examples::

    # everything, 1 thread, batch 1, 224x224, on every backend available here
    python tools/benchmark.py --out-dir docs/benchmark --plot docs/latency_vs_params.png
    # MACs and params only (no timing), e.g. to check them against the papers
    python tools/benchmark.py ours --macs-only
    # a few models on chosen backends
    python tools/benchmark.py efficientformer_l1 timm/efficientformer_l1 timm/resnet50 \\
        --backends eager fused onnxruntime --runs 20 --threads 2

    # one variant against timm's implementation of it, at a chosen size: mmeff eager (unfused)
    # and fused, timm eager and with a channels-last input, timed round-robin in one session
    python tools/benchmark.py efficientformerv2_s0 timm/efficientformerv2_s0 \\
        --backends eager channels-last fused --shape 224 224 --runs 30 --warmup 10
    # the same on the process CPU clock (one thread: robust to other jobs on the machine)
    python tools/benchmark.py efficientvit_m4 timm/efficientvit_m4 --backends eager fused \\
        --runs 30 --clock cpu
    # a dense backbone (every stage output) at a detection size
    python tools/benchmark.py backbone/efficientformer_l1 --backends eager fused \\
        --shape 800 1216 --runs 10

    # compressed ONNX models (fp16, int8) next to the fp32 ONNX Runtime graph
    python tools/benchmark.py efficientformer_l1 --backends onnxruntime onnxruntime-fp16 \\
        onnxruntime-int8-dynamic onnxruntime-int8-static --runs 30 --clock cpu
    # dense backbones at detection / segmentation sizes, and one training step (forward +
    # backward, train mode; with only --backends train: batch 2 at 512x512 by default)
    python tools/benchmark.py backbones --backends eager fused onnxruntime --shape 512 512
    python tools/benchmark.py backbones --backends train --clock cpu

    # Semantic FPN segmentors at 512x512, each next to MMSeg's ResNet-50 one (images/s)
    python tools/benchmark.py segmentors --backends eager fused --threads 1 --runs 5

Models: names (a zoo variant, timm/<name>, backbone/<variant>, semfpn_<config key>), or the
shortcuts ours / timm / refs / all / backbones / segmentors, or a group (EfficientFormer, ...).
Segmentors are built from <config-dir>/semfpn_<key>_ade20k.py.
Latency: median and p90 of --runs timed calls after --warmup calls. Results go to
<out-dir>/<stem>.json and .csv; --plot writes the latency-vs-parameters PNG.
"""
import argparse
import sys

from mmeff.benchmark.registry import select
from mmeff.benchmark.report import (compression_table, format_meta, load_results,
                                    machine_info, ratio_table, results_table, save_outputs)
from mmeff.benchmark.runner import BACKENDS, DEFAULT_BACKENDS, BenchConfig, run_benchmark
from mmeff.benchmark.segmentors import DEFAULT_CONFIG_DIR, SEGMENTOR_ANCHOR, throughput_table
from mmeff.benchmark.timer import CLOCKS
from mmeff.benchmark.train_step import TRAIN_DEFAULT_BATCH, TRAIN_DEFAULT_HW

SHARED_CPU_NOTE = ('note: the CPU may be shared with other jobs; absolute times are noisy. '
                   'Compared models (ours, timm\'s same variant, ResNet-50) are timed round-robin '
                   'in one session, so their ratios are the robust figures')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('models', nargs='*', default=['all'])
    parser.add_argument('--backends', nargs='+', choices=BACKENDS, default=DEFAULT_BACKENDS)
    parser.add_argument('--batch', type=int, default=None,
                        help=f'images per call (default 1; {TRAIN_DEFAULT_BATCH} when train is '
                             'the only backend)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--shape', nargs=2, type=int, default=None, metavar=('H', 'W'),
                        help="input size (default: each model's own, 224x224 for classifiers; "
                             f"{TRAIN_DEFAULT_HW[0]}x{TRAIN_DEFAULT_HW[1]} when train is the "
                             "only backend)")
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--clock', choices=sorted(CLOCKS), default='wall',
                        help='wall time, or the process CPU time (with --threads 1: what the '
                             'work takes on a core of its own, robust to other jobs)')
    parser.add_argument('--macs-only', action='store_true', help='count, do not time')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--stem', default='benchmark', help='file name stem of JSON/CSV')
    parser.add_argument('--plot', default=None, help='PNG path of latency vs parameters')
    parser.add_argument('--merge', nargs='+', default=None, metavar='JSON',
                        help='combine earlier result files (e.g. one run per family) into one '
                             'table, JSON/CSV and plot instead of measuring')
    parser.add_argument('--anchor', default=None,
                        help='model timed in every session as the reference of the ratios '
                             '(default: semfpn_resnet50 when only segmentors are selected, '
                             'else timm/resnet50)')
    parser.add_argument('--config-dir', default=DEFAULT_CONFIG_DIR,
                        help='directory of the semfpn_<variant>_ade20k.py configs the '
                             'segmentors are built from (default: %(default)s, relative to the '
                             'working directory)')
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def apply_train_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """A run of the train backend alone times the dense training step at its usual size
    (batch 2, 512x512); otherwise batch 1 at each model's own size."""
    train_only = list(args.backends) == ['train']
    if args.batch is None:
        args.batch = TRAIN_DEFAULT_BATCH if train_only else 1
    if args.shape is None and train_only:
        args.shape = list(TRAIN_DEFAULT_HW)
    return args


def main(argv=None) -> int:
    args = apply_train_defaults(parse_args(argv))
    if args.batch <= 0 or args.threads <= 0 or args.runs <= 0 or args.warmup < 0:
        print('[benchmark] error: --batch, --threads and --runs must be positive, '
              '--warmup non-negative', file=sys.stderr)
        return 2
    if args.merge:
        return merge(args)
    try:
        models = select(args.models, config_dir=args.config_dir)
    except ValueError as err:
        print(f'[benchmark] error: {err}', file=sys.stderr)
        return 2
    if args.anchor is None:
        segmentors_only = all(m.task == 'segmentor' for m in models)
        args.anchor = SEGMENTOR_ANCHOR if segmentors_only else 'timm/resnet50'
    if args.anchor == SEGMENTOR_ANCHOR and args.anchor not in {m.name for m in models}:
        # segmentors are always shown next to the R50 one
        models += select([args.anchor], config_dir=args.config_dir)
    config = BenchConfig(backends=args.backends, batch=args.batch, threads=args.threads,
                         input_hw=tuple(args.shape) if args.shape else None,
                         warmup=args.warmup, runs=args.runs, macs_only=args.macs_only,
                         anchor=args.anchor, clock=args.clock)
    meta = machine_info(config)
    meta['note'] = SHARED_CPU_NOTE
    print(f'[benchmark] {format_meta(meta)}')
    print(f'[benchmark] {SHARED_CPU_NOTE}')
    rows = run_benchmark(models, config, progress=not args.no_progress)
    backends = [] if args.macs_only else list(args.backends)
    report(rows, meta, backends, args)
    return 0


def merge(args) -> int:
    rows, metas = load_results(args.merge)
    meta = dict(metas[0], merged_from=list(args.merge), runs_merged=metas)
    present = {r.backend for r in rows}
    backends = [b for b in BACKENDS if b in present]
    print(f'[benchmark] merged {len(args.merge)} result files: {format_meta(metas[0])}')
    report(rows, meta, backends, args)
    return 0


def report(rows, meta, backends, args) -> None:
    print()
    print(results_table(rows, backends))
    skipped = {(r.backend, r.note) for r in rows if r.status == 'skipped'}
    for backend, reason in sorted(skipped):
        print(f'[benchmark] skipped {backend}: {reason}')
    classifiers = [r for r in rows if not r.model.startswith('semfpn_')]
    if backends and classifiers:
        print()
        print('speed ratios (lower = faster; medians of one session, timed round-robin):')
        print(ratio_table(classifiers))
    compressed = compression_table(rows) if backends else ''
    if compressed:
        print()
        print('compressed ONNX models (median ms; speedup over fp32 ONNX Runtime in the same '
              'session, higher = faster; drift: tools/export.py --quantize):')
        print(compressed)
    if backends and len(classifiers) < len(rows):
        print()
        print(f'segmentor throughput ({rows[0].batch} image(s) per call; speed relative to '
              f'{SEGMENTOR_ANCHOR} timed in the same session, higher = faster):')
        print(throughput_table(rows))
    outputs = save_outputs(rows, meta, args.out_dir, args.stem, args.plot)
    print(f'\n[benchmark] wrote {outputs.json}, {outputs.csv}'
          + (f', {outputs.png}' if outputs.png else ''))


if __name__ == '__main__':
    sys.exit(main())
