#!/usr/bin/env python
"""Write small, deterministic toy datasets in the real COCO / ADE20K / ImageNet layouts.

    python tools/make_toy_data.py [--out data/toy] [--seed 0] [--kinds coco ade imagenet]
                                  [--num-train N] [--num-val N] [--size H W] [--overwrite]

writes out/coco, out/ade/ADEChallengeData2016 and out/imagenet (see mmeff/datasets/toy_data.py).
"""
import argparse
import sys
import time

from mmeff.datasets.toy_data import DEFAULTS, MAKERS, make_toy_data


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/toy', help='output root (default: data/toy)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kinds', nargs='+', choices=list(MAKERS), default=list(MAKERS))
    defaults = ', '.join(f'{k}: {t}/{v} at {s[0]}x{s[1]}' for k, (t, v, s) in DEFAULTS.items())
    parser.add_argument('--num-train', type=int, help=f'train images (defaults: {defaults})')
    parser.add_argument('--num-val', type=int, help='validation images')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='image size')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset generated earlier in the same place')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    for kind in args.kinds:
        start = time.perf_counter()
        try:
            summary = make_toy_data(args.out, [kind], seed=args.seed, num_train=args.num_train,
                                    num_val=args.num_val, size=args.size,
                                    overwrite=args.overwrite)[kind]
        except (FileExistsError, ValueError) as err:
            sys.exit(f'error: {err}')
        counts = ', '.join(f'{k}={v}' for k, v in summary.items() if k.startswith('num_'))
        print(f'{kind:9s} -> {summary["root"]}  ({counts}; classes {list(summary["classes"])}; '
              f'{time.perf_counter() - start:.2f} s)')


if __name__ == '__main__':
    main()
