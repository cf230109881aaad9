#!/usr/bin/env python
"""Output drift of the compressed ONNX models (fp16, int8 dynamic, int8 static) of zoo
classifiers, one table for docs/compression.md.

No weights are downloaded: each classifier is randomly initialised and its BN statistics,
layer scales and attention-bias tables are randomised (:func:`mmeff.testing.randomize_`), so
its logits are not the near-constant ones of a fresh initialisation (whose residual branches
start at zero) and the top-1 agreement means something. Pass --checkpoint-dir for real
weights (``<dir>/<name>.pth``, any layout).

    python tools/benchmarks/compression_drift.py efficientformer_l1 efficientformerv2_s0 \\
        efficientvit_m4

Per model and mode: file size vs fp32, worst / mean cosine similarity, top-1 agreement and max
relative error of the logits against the fp32 unfused PyTorch model on toy ImageNet-style
images; int8-static calibrated on other toy images (or --calib-dir). Latency is
tools/benchmark.py's (backends onnxruntime-<mode>). Exit status 1 if a drift check fails.
"""
import argparse
import copy
import os
import sys

import torch

from mmeff.deploy.compress import CALIB_NUM, DRIFT_NUM, ONNX_MODES, compress_export
from mmeff.deploy.export import ExportOptions, export
from mmeff.deploy.parts import make_part
from mmeff.models.loading import load_model
from mmeff.testing import randomize_


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('models', nargs='+')
    parser.add_argument('--modes', nargs='+', choices=ONNX_MODES, default=list(ONNX_MODES))
    parser.add_argument('--shape', nargs=2, type=int, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--calib-dir', default=None)
    parser.add_argument('--calib-num', type=int, default=CALIB_NUM)
    parser.add_argument('--drift-num', type=int, default=DRIFT_NUM)
    parser.add_argument('--checkpoint-dir', default=None)
    parser.add_argument('--out-dir', default='work_dirs/compression_drift')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    print('| model | mode | size vs fp32 | cosine min / mean | top-1 agreement | max rel |')
    print('|---|---|---|---|---|---|')
    ok = True
    for name in args.models:
        checkpoint = os.path.join(args.checkpoint_dir, f'{name}.pth') \
            if args.checkpoint_dir else None
        model = load_model(name, checkpoint)
        if checkpoint is None:
            randomize_(model)
        part = make_part(model)
        reference = copy.deepcopy(part).eval()
        report = export(part, os.path.join(args.out_dir, name),
                        ExportOptions(input_hw=tuple(args.shape)))
        for mode in args.modes:
            result = compress_export(reference, report, mode, calib_dir=args.calib_dir,
                                     calib_num=args.calib_num, drift_num=args.drift_num)
            d = result.drift
            print(f'| {name} | {mode} | {result.bytes / result.fp32_bytes:.2f}x | '
                  f'{d.min_cosine:.5f} / {d.mean_cosine:.5f} | '
                  f'{100 * d.top1_agreement:.1f}% ({d.images} images) | {d.max_rel:.2e} |',
                  flush=True)
            ok = ok and result.ok
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
