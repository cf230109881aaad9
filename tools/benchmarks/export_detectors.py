#!/usr/bin/env python
"""Export the project's dense configs whole (detectors with NMS in the graph, Semantic FPN) and
print their parity with MMDet's / MMSeg's own predict and the export times.

No weights are downloaded: every model is randomly initialised with randomised BN statistics,
layer scales and bias tables (``mmeff.testing.randomize_``) and, for two-stage detectors, a
sharpened RoI classifier (``sharpen_roi_classifier``: a random one scores every box under
score_thr). The input is a toy scene (``mmeff.datasets.toy_data.toy_image``).

    python tools/benchmarks/export_detectors.py                  # every family, 320x320
    python tools/benchmarks/export_detectors.py --formats onnx coreml --shape 256 256
    python tools/benchmarks/export_detectors.py maskrcnn_l1_coco --formats coreml

RetinaNet exists as a project config for EfficientViT only; for EfficientFormer (L1) and
EfficientFormerV2 (S0) the script uses MMDet's RetinaNet with the backbone swapped in (FPN on
the stride-8/16/32 maps, as RetinaNet uses them).
"""
import argparse
import copy
import os
import sys
import tempfile
import time
from typing import Iterator

import torch

from mmeff.deploy.export import ExportOptions, export
from mmeff.deploy.framework_parity import add_framework_parity, framework_reference
from mmeff.deploy.parts import prepare_part
from mmeff.models.loading import load_model
from mmeff.testing import randomize_, sharpen_roi_classifier

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RETINANET = """
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='mmeff.{family}', arch='{arch}'),
             neck=dict(in_channels={channels}, start_level=1))
"""
GENERATED = {'retinanet_l1': ('EfficientFormer', 'l1', [48, 96, 224, 448]),
             'retinanet_v2s0': ('EfficientFormerV2', 's0', [32, 48, 96, 176])}
DEFAULT = ['retinanet_l1', 'retinanet_v2s0', 'retinanet_m4_coco', 'maskrcnn_l1_coco',
           'maskrcnn_v2s0_coco', 'maskrcnn_m4_coco', 'semfpn_l1_ade20k', 'semfpn_v2s0_ade20k',
           'semfpn_m4_ade20k']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', default=None,
                        help=f'config names under configs/ (default: {" ".join(DEFAULT)})')
    parser.add_argument('--shape', nargs=2, type=int, default=(320, 320), metavar=('H', 'W'))
    parser.add_argument('--formats', nargs='+', choices=('onnx', 'coreml'), default=['onnx'],
                        help='onnx and / or coreml (image input; detectors whole, NMS '
                             'inside; the row adds the op count and the file size)')
    parser.add_argument('--sharpen', type=float, default=4.0,
                        help='factor on the RoI classifier weights (two-stage detectors)')
    parser.add_argument('--threads', type=int, default=1)
    return parser.parse_args(argv)


def config_path(name: str, tmp: str) -> str:
    if name in GENERATED:
        family, arch, channels = GENERATED[name]
        path = os.path.join(tmp, f'{name}.py')
        with open(path, 'w') as f:
            f.write(RETINANET.format(family=family, arch=arch, channels=channels))
        return path
    return os.path.join(ROOT, 'configs', name if name.endswith('.py') else f'{name}.py')


def run_one(name: str, args, tmp: str) -> Iterator[str]:
    """Rows of the table for one config, as they are measured: ONNX (+ framework parity),
    optionally CoreML."""
    torch.manual_seed(0)  # the default init of convs / linears: the same model every run
    model = sharpen_roi_classifier(randomize_(load_model(config_path(name, tmp)), seed=0),
                                   args.sharpen)
    for fmt in args.formats:
        try:
            detector = copy.deepcopy(model)
            part = prepare_part(detector, 'auto', fmt)
        except ValueError as err:  # a part that cannot be exported whole
            yield f'{name:20s} {fmt:6s} refused: {err}'
            continue
        pending = framework_reference(detector, part, tuple(args.shape), fmt=fmt)
        start, cpu = time.time(), time.process_time()
        report = export(part, os.path.join(tmp, f'{name}_{fmt}'),
                        ExportOptions(fmt=fmt, input_hw=tuple(args.shape)))
        seconds, cpu = time.time() - start, time.process_time() - cpu
        parities = [f'eager vs file: {_figures(report.runtime_parity or report.fused_parity)}']
        add_framework_parity(report, pending)
        if pending is not None:
            parities.append(f'{pending.label}: {_figures(report.extra_parity[pending.label])}')
        outputs = ', '.join(f'{n} {list(s)}' for n, s in zip(report.output_names,
                                                            report.output_shapes))
        if report.coreml is not None:
            parities.append(_spec_facts(report))
        yield (f'{name:20s} {fmt:6s} {report.part:16s} {seconds:6.1f} s ({cpu:.1f} s CPU)  '
               f'{"PASS" if report.ok else "FAIL"}  {outputs}\n    ' + '\n    '.join(parities))


def _spec_facts(report) -> str:
    """A CoreML file's size, op count (consts apart), NMS ops and output declarations."""
    ops = report.coreml.op_types
    size = sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(report.path) for f in files)
    outputs = ', '.join(f'{n} {list(s)} {t}' for n, s, t in report.coreml.outputs)
    return (f'ML Program: {size / 2 ** 20:.1f} MiB, {sum(ops.values())} ops '
            f"({sum(ops.values()) - ops.get('const', 0)} non-const), "
            f"non_maximum_suppression x{ops.get('non_maximum_suppression', 0)}; {outputs}")


def _figures(parity) -> str:
    text = parity.text()
    return text.split(' (tolerance')[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.configs or DEFAULT
    print(f'[export_detectors] {len(names)} configs at {args.shape[0]}x{args.shape[1]}, '
          f'random perturbed weights, toy scenes; torch {torch.__version__}, '
          f'{args.threads} thread(s), {os.cpu_count()} CPUs', flush=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for row in run_one(name, args, tmp):
                ok &= 'FAIL' not in row.split('\n')[0]
                print(row, flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
