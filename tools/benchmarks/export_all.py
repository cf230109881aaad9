#!/usr/bin/env python
"""Export every zoo variant to ONNX and CoreML through the deploy path and print a parity table.

No weights are downloaded: each classifier is randomly initialised and its BN statistics,
layer scales and attention-bias tables are randomised (so a wrong fusion or a missing bias
would show). Pass --checkpoint-dir to use real weights (``<dir>/<name>.pth``, any layout).

    python tools/benchmarks/export_all.py                       # every variant, 224x224
    python tools/benchmarks/export_all.py efficientvit_m0 efficientvit_m1 --no-keep

Per model it prints: ONNX Runtime vs eager PyTorch (max abs / max rel error), the graph check,
the ONNX file size, and for CoreML the op count, whether every op is in the iOS16 op set, the
compute precision and the conversion time. Exit status 1 if any export fails a check.
"""
import argparse
import json
import os
import shutil
import sys
import time
import traceback

import torch

from mmeff.deploy.coreml_compress import file_bytes
from mmeff.deploy.export import ExportOptions, export
from mmeff.models.loading import load_model
from mmeff.deploy.parts import make_part
from mmeff.models.zoo import variant_names
from mmeff.testing import randomize_


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('models', nargs='*', default=None, help='default: every zoo variant')
    parser.add_argument('--shape', nargs=2, type=int, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--coreml-fp32', action='store_true',
                        help='CoreML in fp32 (default fp16, what the Neural Engine runs)')
    parser.add_argument('--checkpoint-dir', default=None)
    parser.add_argument('--out-dir', default='work_dirs/export_all')
    parser.add_argument('--no-keep', action='store_true', help='delete files after checking')
    parser.add_argument('--threads', type=int, default=1)
    return parser.parse_args(argv)


def export_one(name: str, args) -> dict:
    checkpoint = None
    if args.checkpoint_dir:
        checkpoint = os.path.join(args.checkpoint_dir, f'{name}.pth')
    result = {'model': name, 'weights': checkpoint or 'random (BN stats/scales/biases too)'}
    for fmt in ('onnx', 'coreml'):
        model = load_model(name, checkpoint)
        if checkpoint is None:
            randomize_(model, seed=0)
        options = ExportOptions(fmt=fmt, input_hw=tuple(args.shape),
                                fp16=fmt == 'coreml' and not args.coreml_fp32)
        start = time.time()
        try:
            report = export(make_part(model), os.path.join(args.out_dir, name), options)
        except Exception as err:  # noqa: BLE001  (report every model, then fail at the end)
            traceback.print_exc()
            result[fmt] = {'ok': False, 'error': f'{type(err).__name__}: {err}'}
            continue
        entry = {'ok': report.ok, 'seconds': round(time.time() - start, 1),
                 'size_mb': round(file_bytes(report.path) / 2**20, 1),
                 'violations': report.violations,
                 'fused_rel': report.fused_parity.max_rel}
        if fmt == 'onnx':
            entry.update(max_abs=report.runtime_parity.max_abs,
                         max_rel=report.runtime_parity.max_rel,
                         ops=sum(report.graph_ops.values()))
        else:
            s = report.coreml
            (parity,) = report.extra_parity.values()
            entry.update(max_rel=parity.max_rel, ops=sum(s.op_types.values()) -
                         s.op_types.get('const', 0), opset=s.opset,
                         in_op_set=not s.outside_op_set, precision=s.compute_precision,
                         inputs=s.inputs, outputs=s.outputs, op_types=s.op_types)
        result[fmt] = entry
        if args.no_keep:
            (shutil.rmtree if os.path.isdir(report.path) else os.remove)(report.path)
    return result


def format_row(r: dict) -> str:
    o, c = r.get('onnx', {}), r.get('coreml', {})

    def status(e):
        return 'ok' if e.get('ok') else 'FAIL'
    if 'error' in o or 'error' in c:
        return f'{r["model"]:22s} ONNX {status(o)} {o.get("error", "")} | CoreML {status(c)} ' \
               f'{c.get("error", "")}'
    return (f'{r["model"]:22s} {o["max_abs"]:9.2e} {o["max_rel"]:9.2e} {status(o):>5s} '
            f'{o["size_mb"]:7.1f} {o["seconds"]:6.1f} | {c["ops"]:5d} '
            f'{"yes" if c["in_op_set"] else "NO":>6s} {c["precision"]:>5s} '
            f'{c["max_rel"]:9.2e} {status(c):>5s} {c["seconds"]:6.1f}')


HEADER = (f'{"model":22s} {"ORT abs":>9s} {"ORT rel":>9s} {"check":>5s} {"MB":>7s} {"s":>6s} | '
          f'{"ops":>5s} {"op set":>6s} {"prec":>5s} {"trace rel":>9s} {"check":>5s} {"s":>6s}')


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or variant_names()
    os.makedirs(args.out_dir, exist_ok=True)
    print(f'[export_all] {len(names)} models at {args.shape[0]}x{args.shape[1]}; ONNX opset 17 '
          f'checked with ONNX Runtime vs eager (unfused) PyTorch; CoreML ML Program (iOS16, '
          f'{"fp32" if args.coreml_fp32 else "fp16"}) checked structurally; torch '
          f'{torch.__version__}, {args.threads} thread(s)', flush=True)
    results = []
    for name in names:
        results.append(export_one(name, args))
        print(format_row(results[-1]), flush=True)
    print()
    print(HEADER)
    print('-' * len(HEADER))
    for r in results:
        print(format_row(r))
    summary = os.path.join(args.out_dir, 'export_all.json')
    with open(summary, 'w') as f:
        json.dump(results, f, indent=1, default=str)
    ok = all(r.get(f, {}).get('ok') for r in results for f in ('onnx', 'coreml'))
    print(f'\n[export_all] {"all checks passed" if ok else "SOME CHECKS FAILED"}; '
          f'details in {summary}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
