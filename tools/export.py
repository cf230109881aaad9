#!/usr/bin/env python
"""Export an mmeff model to ONNX, CoreML or TorchScript and print a parity report.

Examples::

    # classifier by name (random weights unless a checkpoint is given), CoreML for iPhone
    python tools/export.py efficientformer_l1 l1.pth --format coreml --fp16
    # multi-output dense backbone
    python tools/export.py efficientformerv2_s0 --part backbone --format onnx --shape 512 512
    # MMSeg Semantic FPN end to end (image -> per-pixel logits)
    python tools/export.py configs/fpn_l1_ade20k.py work_dirs/.../iter_40000.pth \\
        --format onnx --shape 512 512
    # MMDet RetinaNet / Mask R-CNN whole: boxes, scores, labels (+ masks), NMS in the graph
    python tools/export.py configs/retinanet_m4_coco.py ckpt.pth --format onnx --shape 800 1344
    # ... to CoreML (ML Program: image input, NMS and RoIAlign inside, N detections)
    python tools/export.py configs/maskrcnn_l1_coco.py ckpt.pth --format coreml --shape 320 320
    # ... or only the raw dense-head maps (NMS on the host)
    python tools/export.py configs/retinanet_m4_coco.py ckpt.pth --format onnx \\
        --part detector-head --shape 800 1344
    # CoreML for Vision: an image input (mean/std inside the model) is the default for configs
    python tools/export.py configs/semfpn_l1_ade20k.py ckpt.pth --format coreml --shape 512 512
    # compressed copies with their drift against the fp32 PyTorch model (docs/compression.md)
    python tools/export.py efficientformer_l1 l1.pth --format onnx --quantize int8-static \\
        --calib-dir data/imagenet/train --calib-num 64
    python tools/export.py efficientvit_m4 m4.pth --format coreml --quantize int8-linear \\
        palettize-6 palettize-4

The model goes down the deploy path first (BN folded, attention biases frozen for --shape,
no DropPath/Dropout); the exported graph is inspected for leftovers and compared with the
unfused PyTorch model; a whole detector and a segmentor are also compared with MMDet's /
MMSeg's own predict on a toy scene (ONNX: the file in ONNX Runtime; CoreML: the graph that was
converted, as CoreML predictions need macOS; docs/deploy.md). Exit status: 0 when every check passes, 1
when a check fails, 2 for an input error (an unsupported request, a missing or damaged
checkpoint, a config that does not parse), reported as one message.
"""
import argparse
import copy
import os
import sys

from mmeff.deploy.compress import (CALIB_NUM, DRIFT_NUM, MODES, Normalization,
                                   check_compression, compress_export)
from mmeff.deploy.export import (COREML_TARGETS, FORMATS, ExportError,
                                 ExportOptions, export)
from mmeff.engine.launch import INPUT_ERRORS
from mmeff.models.loading import load_model
from mmeff.deploy.framework_parity import add_framework_parity, framework_reference
from mmeff.deploy.parts import PARTS, prepare_part


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('model', metavar='CONFIG_OR_MODEL',
                        help='config file, or a model name such as efficientformer_l1')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='weights (any supported layout); random init when omitted')
    parser.add_argument('--format', choices=FORMATS, required=True)
    parser.add_argument('--shape', nargs=2, type=int, default=(224, 224), metavar=('H', 'W'),
                        help='input height and width (default 224 224)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--fp16', action='store_true',
                        help='half precision (CoreML: fp16 compute, what the Neural Engine '
                             'runs, refused for a whole detector; ONNX/TorchScript: needs '
                             'CUDA)')
    dyn = parser.add_mutually_exclusive_group()
    dyn.add_argument('--dynamic', action='store_true',
                     help='ONNX with dynamic batch, H and W (refused for models with '
                          'attention biases: they are constants for --shape)')
    dyn.add_argument('--dynamic-batch', action='store_true',
                     help='ONNX with a dynamic batch dimension only')
    parser.add_argument('--out', default=None,
                        help='output path (default: work_dirs/export/<name>_<H>x<W>.<ext>)')
    parser.add_argument('--part', choices=PARTS, default='auto',
                        help='what to export (default: inferred from the model)')
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument('--image-input', action='store_true', default=None,
                      help='the graph takes the image (pixels 0..255 in the config\'s channel '
                           'order) and normalises it with the config\'s data_preprocessor '
                           'mean/std; CoreML: an ImageType input (the default for configs)')
    kind.add_argument('--tensor-input', dest='image_input', action='store_false',
                      help='the graph takes the normalised tensor (the default for ONNX and '
                           'TorchScript)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--coreml-target', choices=COREML_TARGETS, default='iOS16')
    parser.add_argument('--tolerance', type=float, default=None,
                        help='relative-error bound (default 1e-4 fp32, 1e-2 fp16)')
    parser.add_argument('--threads', type=int, default=1,
                        help='PyTorch intra-op threads (default 1: export is not timed, and '
                             'spinning threads on a busy machine slow it down many times)')
    parser.add_argument('--quantize', nargs='+', default=None, metavar='MODE',
                        choices=[m for modes in MODES.values() for m in modes],
                        help='also write compressed copies <out>_<mode> and report their drift: '
                             f'ONNX {MODES["onnx"]} (drift of ONNX Runtime vs the fp32 PyTorch '
                             f'model on toy images); CoreML {MODES["coreml"]} (weight error '
                             'and size; running it needs macOS)')
    parser.add_argument('--calib-dir', default=None,
                        help='images calibrating int8-static (any folder layout; default: '
                             'generated toy images, fine for a smoke test only)')
    parser.add_argument('--calib-num', type=int, default=CALIB_NUM,
                        help='calibration images, spread over --calib-dir (default %(default)s)')
    parser.add_argument('--drift-num', type=int, default=DRIFT_NUM,
                        help='toy images the drift is measured on (default %(default)s)')
    parser.add_argument('--verbose', action='store_true', help='show converter progress')
    return parser.parse_args(argv)


def default_out(model: str, part: str, shape, fmt: str) -> str:
    name = os.path.splitext(os.path.basename(model))[0]
    suffix = '' if part in ('auto', 'classifier') else f'_{part}'
    ext = {'onnx': 'onnx', 'coreml': 'mlpackage', 'torchscript': 'pt'}[fmt]
    return os.path.join('work_dirs', 'export', f'{name}{suffix}_{shape[0]}x{shape[1]}.{ext}')


def main(argv=None) -> int:
    args = parse_args(argv)
    options = ExportOptions(fmt=args.format, input_hw=tuple(args.shape), batch=args.batch,
                            fp16=args.fp16, dynamic=args.dynamic,
                            dynamic_batch=args.dynamic_batch, opset=args.opset,
                            coreml_target=args.coreml_target, tolerance=args.tolerance)
    out = args.out or default_out(args.model, args.part, args.shape, args.format)
    if args.threads > 0:
        import torch
        torch.set_num_threads(args.threads)
    try:
        check_compression(args.format, args.quantize or [], args.calib_dir, args.calib_num,
                          args.drift_num)
        model = load_model(args.model, args.checkpoint, args.part)
        part = prepare_part(model, args.part, args.format, args.image_input)
        reference = copy.deepcopy(part).eval() if args.quantize else None  # export fuses part
        # the framework's own predict, taken before the export fuses the model in place
        pending = framework_reference(model, part, options.input_hw, fmt=args.format)
        report = export(part, out, options, verbose=args.verbose)
        add_framework_parity(report, pending)
        # an image-input part normalises inside the graph: feed it pixels
        normalization = Normalization((0., 0., 0.), (1., 1., 1.)) \
            if report.input_kind == 'image' else Normalization.of_model(model)
        for mode in args.quantize or []:
            compress_export(reference, report, mode, args.coreml_target, args.calib_dir,
                            args.calib_num, args.drift_num, normalization)
    except ExportError as err:
        print(f'[export] FAILED: {err}', file=sys.stderr)
        return 1
    except INPUT_ERRORS as err:
        print(f'[export] error: {err}', file=sys.stderr)
        return 2
    if args.checkpoint is None:
        report.notes.append('no checkpoint given: random weights (structure and parity only)')
    print(report.text())
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
