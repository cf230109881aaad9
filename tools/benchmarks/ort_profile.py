#!/usr/bin/env python
"""Where ONNX Runtime spends its time on the benchmark's graphs, and the fp32 MAC floor.

    python tools/benchmarks/ort_profile.py efficientformer_l1 timm/efficientformer_l1 \\
        efficientformerv2_s0 timm/efficientformerv2_s0 efficientvit_m4 timm/efficientvit_m4

For each model it runs the graph the benchmark's ``onnxruntime`` backend runs
(:func:`mmeff.benchmark.timer.ort_graph`: the deployed model for mmeff's, the model as built for
timm's), one thread, batch 1, under ONNX Runtime's profiler, and prints the share of kernel
time per op class of the graph ORT optimised (dense convolutions and GEMMs are the
multiply-accumulates; depth-wise convolutions, GELU, layout ops and the rest are not). It
also times ORT's own fp32 1x1 convolution on this machine (the best GFLOP/s of a few
stage-like shapes) and prints the *MAC floor* of each model: its MACs at that rate, the time
no fp32 graph of the same MACs can beat on this core. Docs: docs/deploy_speed.md.
"""
import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np
import torch

from mmeff.benchmark.registry import select
from mmeff.benchmark.runner import complexity_of
from mmeff.benchmark.timer import ort_graph

#: (channels in, channels out, map size) of the 1x1 convolutions timed for the machine's rate
RATE_SHAPES = ((96, 384, 28), (224, 896, 14), (448, 1792, 7))
CLASSES = ('dense conv + GEMM', 'depth-wise conv', 'GELU', 'layout', 'other')
LAYOUT_OPS = {'ReorderInput', 'ReorderOutput', 'Transpose', 'Reshape', 'Split', 'Concat',
              'Slice', 'Gather', 'Flatten'}


def session(graph: bytes, profile_dir: str = ''):
    """A one-thread CPU session (the benchmark's options), profiling into ``profile_dir``;
    the optimised graph is saved there too."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, 'profile')
        options.optimized_model_filepath = os.path.join(profile_dir, 'optimised.onnx')
    return ort.InferenceSession(graph, options, providers=['CPUExecutionProvider'])


def cpu_ms(run, runs: int) -> float:
    """Median process-CPU milliseconds of ``runs`` calls after 5 warm-up calls."""
    for _ in range(5):
        run()
    samples = []
    for _ in range(runs):
        start = time.process_time()
        run()
        samples.append((time.process_time() - start) * 1e3)
    return statistics.median(samples)


def conv1x1_rate(runs: int) -> float:
    """ONNX Runtime's best fp32 GFLOP/s over :data:`RATE_SHAPES` (one 1x1 conv per graph)."""
    from onnx import TensorProto, helper, numpy_helper
    best = 0.0
    for cin, cout, hw in RATE_SHAPES:
        weight = numpy_helper.from_array(np.random.rand(cout, cin, 1, 1).astype(np.float32), 'w')
        graph = helper.make_graph(
            [helper.make_node('Conv', ['input', 'w'], ['out'])], 'conv1x1',
            [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, cin, hw, hw])],
            [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, cout, hw, hw])],
            [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)],
                                  ir_version=8)
        sess = session(model.SerializeToString())
        feed = {'input': np.random.rand(1, cin, hw, hw).astype(np.float32)}
        ms = cpu_ms(lambda: sess.run(None, feed), runs)
        best = max(best, 2 * cin * cout * hw * hw / ms / 1e6)
    return best


def op_class(op: str, group: int) -> str:
    if op == 'Conv':
        return 'dense conv + GEMM' if group == 1 else 'depth-wise conv'
    if op in ('Gemm', 'MatMul', 'FusedMatMul', 'FusedGemm'):
        return 'dense conv + GEMM'
    if op in ('Gelu', 'FastGelu', 'BiasGelu'):
        return 'GELU'
    return 'layout' if op in LAYOUT_OPS else 'other'


def profile(graph: bytes, x: np.ndarray, runs: int) -> Tuple[float, Dict[str, float]]:
    """(median CPU ms without profiling, {op class: share of profiled kernel time})."""
    import onnx
    plain = session(graph)
    ms = cpu_ms(lambda: plain.run(None, {'input': x}), runs)
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(graph, tmp)
        for _ in range(runs):
            sess.run(None, {'input': x})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
        groups = {node.name: next((a.i for a in node.attribute if a.name == 'group'), 1)
                  for node in onnx.load(os.path.join(tmp, 'optimised.onnx')).graph.node}
    spent = collections.Counter()
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            node = e['name'][:-len('_kernel_time')]
            spent[op_class(e['args']['op_name'], groups.get(node, 1))] += e['dur']
    total = sum(spent.values())
    return ms, {c: spent[c] / total for c in CLASSES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('models', nargs='+')
    parser.add_argument('--runs', type=int, default=30)
    args = parser.parse_args(argv)
    if args.runs < 1:
        print(f'error: --runs must be at least 1, got {args.runs}', file=sys.stderr)
        return 2
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print('onnxruntime is not installed (pip install mmeff[export])', file=sys.stderr)
        return 2
    try:
        models = select(args.models)
    except (KeyError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rate = conv1x1_rate(args.runs)
    print(f'ONNX Runtime fp32 1x1 conv, 1 thread: {rate:.1f} GFLOP/s (best of {RATE_SHAPES})')
    header = ['model', 'GMACs', 'ORT ms', 'GFLOP/s', 'MAC floor ms'] + list(CLASSES)
    lines: List[str] = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for bm in models:
        torch.manual_seed(0)
        model = bm.build().eval()
        shape = (1, 3) + tuple(bm.input_hw)
        gmacs = complexity_of(model, shape)[1]
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        ms, shares = profile(ort_graph(model, x), x.numpy(), args.runs)
        cells = [bm.name, f'{gmacs:.3f}', f'{ms:.2f}', f'{2 * gmacs / ms * 1e3:.1f}',
                 f'{2 * gmacs / rate * 1e3:.2f}'] + [f'{100 * shares[c]:.0f}%' for c in CLASSES]
        lines.append('| ' + ' | '.join(cells) + ' |')
        print(lines[-1], flush=True)
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
