#!/usr/bin/env python
"""1x1 convolution training passes on CPU: aten's own choice vs mmeff's oneDNN kernels.

    python tools/benchmarks/pointwise_conv.py              # L1 / M4 MLP shapes at 512
    python tools/benchmarks/pointwise_conv.py --runs 31 --shapes 2,48,128,192 2,384,8,768

For every shape (batch, channels in, map size, channels out) it times forward + backward
(input, weight and bias gradients) on a channels-last input, round-robin on the process CPU
clock with the one timer (:func:`mmeff.benchmark.timer.round_robin`), of ``nn.Conv2d``
(aten's choice) and of :class:`mmeff.models.layers.PointwiseConv2d` with its oneDNN kernels
forced on every shape, marks what its ``MIN_ONEDNN_PIXELS`` rule picks, and checks that the
kernels give aten's output and gradients (largest relative error printed). The measurement
behind ``MIN_ONEDNN_PIXELS``.
"""
import argparse
import os
import sys
from typing import List, Sequence, Tuple

import torch
from torch import nn

from mmeff.benchmark.timer import cpu_name, round_robin
from mmeff.models.layers import pointwise
from mmeff.testing import norm_rel_err

#: EfficientFormer-L1's MLP convs at 2x512x512 (one per stage, both directions) and
#: EfficientViT-M4's FFN convs at 2x448x448 (stages 2-3, small maps)
DEFAULT_SHAPES = ((2, 48, 128, 192), (2, 192, 128, 48), (2, 96, 64, 384), (2, 384, 64, 96),
                  (2, 224, 32, 896), (2, 896, 32, 224), (2, 448, 16, 1792),
                  (2, 1792, 16, 448), (2, 256, 16, 512), (2, 512, 16, 256), (2, 384, 8, 768),
                  (2, 768, 8, 384))
#: ``MIN_ONEDNN_PIXELS`` that sends every shape to the oneDNN kernels
FORCE_ONEDNN = -1

Shape = Tuple[int, int, int, int]


def parse_shape(text: str) -> Shape:
    parts = text.split(',')
    if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f'a shape is four positive integers "batch,in,size,out", got {text!r}')
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


class _Forced:
    """A call with ``pointwise.MIN_ONEDNN_PIXELS`` set for its duration."""

    def __init__(self, fn, limit: int):
        self.fn, self.limit = fn, limit

    def __call__(self):
        saved, pointwise.MIN_ONEDNN_PIXELS = pointwise.MIN_ONEDNN_PIXELS, self.limit
        try:
            return self.fn()
        finally:
            pointwise.MIN_ONEDNN_PIXELS = saved


def one_shape(shape: Shape, runs: int) -> List[str]:
    batch, cin, size, cout = shape
    gen = torch.Generator().manual_seed(0)
    ref = nn.Conv2d(cin, cout, 1)
    fast = pointwise.PointwiseConv2d(cin, cout)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(batch, cin, size, size, generator=gen).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(batch, cout, size, size, generator=gen).contiguous(
        memory_format=torch.channels_last)

    def step(conv: nn.Module):
        def run():
            x.grad = None
            conv.zero_grad(set_to_none=True)
            out = conv(x)
            out.backward(grad)
            return out.detach(), x.grad, conv.weight.grad, conv.bias.grad
        return run

    fns = [step(ref), _Forced(step(fast), FORCE_ONEDNN)]
    want = fns[0]()
    err = max(norm_rel_err(g, w) for g, w in zip(fns[1](), want))  # also the warm-up
    t_aten, t_onednn = (t.median_ms for t in round_robin(fns, runs, 'cpu'))
    picks_onednn = batch * size * size > pointwise.MIN_ONEDNN_PIXELS
    return [','.join(map(str, shape)), str(batch * size * size), f'{t_aten:.2f}' +
            ('' if picks_onednn else ' *'), f'{t_onednn:.2f}' + (' *' if picks_onednn else ''),
            f'{t_aten / t_onednn:.2f}x', f'{err:.1e}']


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--shapes', nargs='+', type=parse_shape, default=list(DEFAULT_SHAPES),
                        help='batch,in,size,out per shape (default: L1 and M4 MLP shapes)')
    parser.add_argument('--runs', type=int, default=21, help='timed calls per variant')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        parser.error('--runs and --threads must be at least 1')
    torch.set_num_threads(args.threads)
    print(f'# {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), process CPU '
          f'clock, {args.runs} round-robin runs, medians of forward + backward in ms, '
          f'load average {os.getloadavg()[0]:.2f}; * = the kernel PointwiseConv2d picks')
    header = ['shape (N,Cin,HW,Cout)', 'pixels', 'aten', 'oneDNN', 'aten / oneDNN',
              'max rel err']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for shape in args.shapes:
        print('| ' + ' | '.join(one_shape(shape, args.runs)) + ' |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
