"""Latency-driven search of an EfficientFormer for your device and latency budget.

    python tools/search.py CONFIG --target-latency MS [MS ...] [--objective latency|mes]
        [--lut PATH] [--work-dir DIR] [--target-ratio R ...] [--compare] [--retrain-supernet]

Trains the supernet of CONFIG as tools/train.py does (or reuses WORK_DIR/supernet.pth),
measures the latency table on this machine (or loads --lut, e.g. one measured on a phone) and
fits it to whole networks measured here, slims to each target with EfficientFormer's Alg. 1
(then measures the result and slims on while it is above the target) and writes, per target,
the arch JSON, a classification config (the search config's recipe and data), a Mask R-CNN
config and a plot of the steps. --compare trains the result and random networks of the same
latency from scratch with their written configs (Table 5 of the paper).
"""
import argparse
import sys

import torch
from mmengine.config import Config

from mmeff.search.pipeline import run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--target-latency', type=float, nargs='*', default=[], metavar='MS')
    p.add_argument('--target-ratio', type=float, nargs='*', default=[],
                   help='targets as fractions of the measured latency of the starting subnet')
    p.add_argument('--objective', choices=('latency', 'mes'), default='latency')
    p.add_argument('--lut', default=None, help='latency table (JSON/CSV); built if missing')
    p.add_argument('--work-dir', default='work_dirs/search')
    p.add_argument('--retrain-supernet', action='store_true')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads for training/evaluation (1: fastest on a shared CPU)')
    p.add_argument('--compare', action='store_true',
                   help='train searched + random same-latency nets from scratch (Table 5)')
    args = p.parse_args(argv)
    if not args.target_latency and not args.target_ratio:
        p.error('give --target-latency MS (or --target-ratio R)')
    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    run(cfg, args.target_latency, args.target_ratio, args.objective, args.lut, args.work_dir,
        resume=not args.retrain_supernet, compare=args.compare, log=lambda s: print(s, flush=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
