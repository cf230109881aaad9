"""Search an EfficientFormer (latency-driven, V1) or an EfficientFormerV2 (MES-driven) for your
device and budget.

    python tools/search.py CONFIG --target-latency MS [MS ...] [--objective latency|mes]
        [--lut PATH] [--work-dir DIR] [--target-ratio R ...] [--compare] [--retrain-supernet]
    python tools/search.py CONFIG --family efficientformerv2 --target-mes X [X ...]
        [--target-latency MS ...] [--target-params M ...] [--objective mes|latency|params]
        [--lut PATH] [--work-dir DIR] [--compare] [--retrain-supernet]

The family follows the config's backbone (``mmeff.EfficientFormerSupernet``: V1,
``mmeff.EfficientFormerV2Supernet``: V2) unless --family names it.

V1: trains the supernet of CONFIG as tools/train.py does (or reuses WORK_DIR/supernet.pth),
measures the latency table on this machine (or loads --lut, e.g. one measured on a phone) and
fits it to whole networks measured here, slims to each target with EfficientFormer's Alg. 1
(then measures the result and slims on while it is above the target) and writes, per target,
the arch JSON, a classification config (the search config's recipe and data), a Mask R-CNN
config and a plot of the steps. --compare trains the result and random networks of the same
latency from scratch with their written configs (Table 5 of the paper).

V2: trains the slimmable supernet by the sandwich rule (or reuses it), measures the table of
the space's V2 ops (or loads --lut) and calibrates it, slims from the largest subnet by the
accuracy drop per MES gain (EfficientFormerV2's Alg. 1) to each target (MES: at or above;
latency / params: at or below) and writes the same files for ``mmeff.EfficientFormerV2``.
--compare adds random subnets of the same MES and size, one per seed of search.seeds
(supernet accuracy; trained from scratch too with search.train_from_scratch=True).

Input errors (a bad option, config, arch outside the space, unreachable target, a latency
table lacking an entry) print one message and exit with status 2.
"""
import argparse
import sys
from typing import List

import torch
from mmengine.config import Config

FAMILIES = ('efficientformer', 'efficientformerv2')


def family_of(cfg: Config) -> str:
    """'efficientformerv2' when the config's backbone is the V2 supernet, else V1's."""
    backbone = str(cfg.get('model', {}).get('backbone', {}).get('type', ''))
    return 'efficientformerv2' if 'EfficientFormerV2' in backbone else 'efficientformer'


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--family', choices=FAMILIES, default=None,
                   help="default: from the config's backbone type")
    p.add_argument('--target-latency', type=float, nargs='*', default=[], metavar='MS')
    p.add_argument('--target-ratio', type=float, nargs='*', default=[],
                   help='(V1) targets as fractions of the measured latency of the starting '
                        'subnet')
    p.add_argument('--target-mes', type=float, nargs='*', default=[], metavar='MES',
                   help='(V2) stop when the MES reaches this value')
    p.add_argument('--target-params', type=float, nargs='*', default=[], metavar='M',
                   help='(V2) stop when the classifier has at most M million parameters')
    p.add_argument('--objective', choices=('latency', 'mes', 'params'), default=None,
                   help='gain per accuracy drop: ms saved, MES gained or M params saved '
                        '(default: latency for V1, mes for V2)')
    p.add_argument('--lut', default=None, help='latency table (JSON/CSV); built if missing')
    p.add_argument('--work-dir', default=None,
                   help='default: work_dirs/search (V1), work_dirs/search_v2 (V2)')
    p.add_argument('--retrain-supernet', action='store_true')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads for training/evaluation (1: fastest on a shared CPU)')
    p.add_argument('--compare', action='store_true',
                   help='V1: train searched + random same-latency nets from scratch (Table 5); '
                        'V2: random subnets of the same MES and size, per seed')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        cfg = Config.fromfile(args.config)
        family = args.family or family_of(cfg)
        torch.set_num_threads(args.threads)
        if family == 'efficientformerv2':
            run_v2_search(cfg, args, log)
        else:
            run_v1_search(cfg, args, log)
    except (ValueError, FileNotFoundError) as err:
        print(f'[search] error: {err}', file=sys.stderr)
        return 2
    return 0


def run_v1_search(cfg: Config, args: argparse.Namespace, log) -> None:
    from mmeff.search.pipeline import run
    if args.target_mes or args.target_params:
        raise ValueError('--target-mes / --target-params are targets of the EfficientFormerV2 '
                         'search (--family efficientformerv2 with a V2 supernet config); the '
                         'V1 search stops at --target-latency / --target-ratio')
    if args.objective == 'params':
        raise ValueError('the V1 search takes --objective latency or mes')
    if not args.target_latency and not args.target_ratio:
        raise ValueError('give --target-latency MS (or --target-ratio R)')
    run(cfg, args.target_latency, args.target_ratio, args.objective or 'latency', args.lut,
        args.work_dir or 'work_dirs/search', resume=not args.retrain_supernet,
        compare=args.compare, log=log)


def run_v2_search(cfg: Config, args: argparse.Namespace, log) -> None:
    from mmeff.search.slimming import Goal
    from mmeff.search.v2_pipeline import run_v2
    if args.target_ratio:
        raise ValueError('--target-ratio is a V1 option; the V2 search takes --target-mes, '
                         '--target-latency or --target-params')
    objective = args.objective or 'mes'
    goals: List[Goal] = [Goal(kind, t, objective) for kind, values in (
        ('mes', args.target_mes), ('latency', args.target_latency),
        ('params', args.target_params)) for t in values]
    if not goals:
        raise ValueError('give a target: --target-mes X, --target-latency MS or '
                         '--target-params M')
    run_v2(cfg, goals, args.lut, args.work_dir or 'work_dirs/search_v2',
           resume=not args.retrain_supernet, compare=args.compare, log=log)


if __name__ == '__main__':
    sys.exit(main())
