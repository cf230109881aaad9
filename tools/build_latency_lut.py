"""Build (or import) the latency lookup table of the EfficientFormer search.

    python tools/build_latency_lut.py --img-size 224 --max-widths 48 96 224 448 \
        [--batch 1] [--backend eager|fused|onnxruntime] [--step 16] [--min-width 16]
        [--v2 --v2-ratios 3 4] [--threads 1] [--runs 50] --out lut.json
    python tools/build_latency_lut.py --family efficientformerv2 --config SEARCH_CONFIG \
        --img-size 224 [--batch 1] [--backend ...] [--threads 1] [--runs 50] --out lut.json
    python tools/build_latency_lut.py --import iphone.csv --out lut.json

Measures MB4D / MB3D (and with --v2 EfficientFormerV2's FFN and attention blocks) at every
width, multiple of --step, at each stage's resolution, plus stem, embeddings and head, then
checks the table's prediction of whole networks (the widest L1-like net and a narrower one)
against a direct measurement. --import reads a CSV measured elsewhere (schema in
mmeff/search/lut.py) and writes it in JSON/CSV. --family efficientformerv2 measures the V2 ops
(v2_stem / v2_embed / v2_ffn / v2_attn / v2_head) at the width and ratio choices of the
supernet of --config and checks the prediction of its largest and smallest subnets.
"""
import argparse
import sys

import torch

from mmeff.search.lut import BACKENDS, LatencyLUT, build_lut, build_v2_lut, measure_network_ms
from mmeff.search.space import Subnet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--import', dest='import_path', default=None)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--max-widths', type=int, nargs=4, default=[48, 96, 224, 448])
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--backend', default='eager', choices=BACKENDS)
    p.add_argument('--step', type=int, default=16)
    p.add_argument('--min-width', type=int, default=16)
    p.add_argument('--num-classes', type=int, default=1000)
    p.add_argument('--v2', action='store_true')
    p.add_argument('--v2-ratios', type=float, nargs='*', default=[4.0])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--runs', type=int, default=30)
    p.add_argument('--check-depths', type=int, nargs=4, default=[2, 2, 3, 3],
                   help='depths of the networks used to check the prediction')
    p.add_argument('--family', choices=('efficientformer', 'efficientformerv2'),
                   default='efficientformer')
    p.add_argument('--config', default=None,
                   help='(efficientformerv2) the search config whose supernet gives the choices')
    p.add_argument('--out', required=True)
    args = p.parse_args(argv)
    if args.family == 'efficientformerv2' and not args.import_path:
        try:
            return build_v2(args)
        except (ValueError, FileNotFoundError) as err:
            print(f'[lut] error: {err}', file=sys.stderr)
            return 2
    if args.import_path:
        lut = LatencyLUT.load(args.import_path)
        lut.save(args.out)
        print(f'imported {len(lut.entries)} entries (meta {lut.meta}) -> {args.out}')
        return 0
    torch.set_num_threads(args.threads)
    lut = build_lut(args.img_size, args.max_widths, args.batch, args.backend, args.step,
                    args.min_width, args.num_classes, v2=args.v2, v2_ratios=args.v2_ratios,
                    runs=args.runs, threads=args.threads, log=print)
    lut.save(args.out)
    print(f'{len(lut.entries)} entries -> {args.out}; meta {lut.meta}')
    half = [max(args.min_width, w // 2 // args.step * args.step) for w in args.max_widths]
    d = args.check_depths
    for arch in (dict(widths=args.max_widths, depths=d, num_vit=1),
                 dict(widths=half, depths=[max(1, x - 1) for x in d], num_vit=2)):
        pred = lut.predict(Subnet.from_arch(arch))
        meas = measure_network_ms(arch, args.img_size, args.batch, args.backend,
                                  args.num_classes, args.runs, 5, args.threads)
        print(f'check {arch}: LUT {pred:.3f} ms, measured {meas:.3f} ms, '
              f'error {100 * (pred - meas) / meas:+.1f}%')
    return 0



def build_v2(args) -> int:
    """The V2 table of the supernet's choices, checked on its largest and smallest subnets."""
    from mmengine.config import Config

    from mmeff.registry import MODELS
    from mmeff.search.v2_subnet import V2Subnet
    if not args.config:
        raise ValueError('--family efficientformerv2 needs --config: the search config whose '
                         'EfficientFormerV2Supernet gives the width and ratio choices')
    cfg = Config.fromfile(args.config)
    space = MODELS.build(cfg.model['backbone']).search_space
    torch.set_num_threads(args.threads)
    lut = build_v2_lut(args.img_size, space.width_choices, space.ratio_choices, args.batch,
                       args.backend, args.num_classes, runs=args.runs, threads=args.threads,
                       log=print)
    lut.save(args.out)
    print(f'{len(lut.entries)} entries -> {args.out}; meta {lut.meta}')
    for arch in (space.max_arch, space.min_arch):
        pred = lut.predict(V2Subnet.from_arch(arch))
        meas = measure_network_ms(arch, args.img_size, args.batch, args.backend,
                                  args.num_classes, args.runs, 5, args.threads,
                                  'efficientformerv2')
        print(f'check {V2Subnet.from_arch(arch).describe()}: LUT {pred:.3f} ms, measured '
              f'{meas:.3f} ms, error {100 * (pred - meas) / meas:+.1f}%')
    return 0


if __name__ == '__main__':
    sys.exit(main())
