#!/usr/bin/env python
"""EfficientViT's window attention in training on CPU: mmeff's row form vs the official NCHW
formulation.

    python tools/benchmarks/efficientvit_attention_train.py            # M0 and M4 at 512
    python tools/benchmarks/efficientvit_attention_train.py --variants m2 --size 800 --runs 31

For every stage of a variant at a dense input (batch 2), it builds one
``CascadedGroupAttention`` and times forward + backward (input and every parameter gradient;
BatchNorms in training mode) on the stage's padded window batch, round-robin on the process CPU
clock with the one timer (:func:`mmeff.benchmark.timer.round_robin`): the module itself on
channels-last windows (what ``LocalWindowAttention`` hands it in training) and
:func:`mmeff.testing.nchw_cascaded_attention` on NCHW windows (the official downstream code's
per-head formulation and layout), and checks that both give the same output and gradients
(largest relative error printed). The measurement behind the class's docstring.
"""
import argparse
import copy
import math
import os
import sys
from typing import List, Sequence

import torch

from mmeff.benchmark.timer import cpu_name, round_robin
from mmeff.models.backbones.efficientvit.arch import EFFICIENTVIT_ARCHS, validate_arch
from mmeff.models.backbones.efficientvit.blocks import CascadedGroupAttention
from mmeff.testing import nchw_cascaded_attention, norm_rel_err, randomize_

WINDOW = 7
BATCH = 2


def _step(attn: CascadedGroupAttention, forward, windows: torch.Tensor, grad_seed: int):
    """One forward + backward of ``forward`` on ``windows``, the output gradient a fixed random
    tensor in the output's own memory format (as the network behind it would send)."""
    gen = torch.Generator().manual_seed(grad_seed)

    def run():
        x = windows.clone().requires_grad_()
        attn.zero_grad(set_to_none=True)
        out = forward(x)
        out.backward(torch.randn(out.shape, generator=gen).contiguous(
            memory_format=torch.channels_last if out.is_contiguous(
                memory_format=torch.channels_last) else torch.contiguous_format))
        gen.manual_seed(grad_seed)
        return [out.detach(), x.grad] + [p.grad for p in attn.parameters()]
    return run


def one_stage(variant: str, stage: int, size: int, runs: int) -> List[str]:
    arch = validate_arch(EFFICIENTVIT_ARCHS[variant])
    dim, heads = arch['embed_dims'][stage], arch['num_heads'][stage]
    side = math.ceil(size / 2 ** (4 + stage))
    win = min(WINDOW, side)
    count = BATCH * math.ceil(side / win) ** 2
    rows_form = randomize_(CascadedGroupAttention(dim, arch['key_dim'], heads,
                                                  (WINDOW, WINDOW), arch['kernels'])).train()
    nchw_form = copy.deepcopy(rows_form)
    windows = torch.randn(count, dim, win, win, generator=torch.Generator().manual_seed(0))
    fns = [_step(rows_form, rows_form, windows.contiguous(memory_format=torch.channels_last), 1),
           _step(nchw_form, lambda x: nchw_cascaded_attention(nchw_form, x), windows, 1)]
    got, want = fns[0](), fns[1]()  # also the warm-up
    err = max(norm_rel_err(g, w) for g, w in zip(got, want))
    t_rows, t_nchw = (t.median_ms for t in round_robin(fns, runs, 'cpu'))
    return [variant, f'{side}x{side}', f'{count}x{dim}x{win}x{win}', str(heads),
            f'{t_nchw:.2f}', f'{t_rows:.2f}', f'{t_nchw / t_rows:.2f}x', f'{err:.1e}']


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variants', nargs='+', default=['m0', 'm4'],
                        help=f'EfficientViT variants, from {sorted(EFFICIENTVIT_ARCHS)}')
    parser.add_argument('--size', type=int, default=512, help='square input side (batch 2)')
    parser.add_argument('--runs', type=int, default=15, help='timed calls per form')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in EFFICIENTVIT_ARCHS]
    if unknown:
        parser.error(f'unknown variants {unknown}; choose from {sorted(EFFICIENTVIT_ARCHS)}')
    if args.runs < 1 or args.threads < 1 or args.size < 16:
        parser.error('--runs and --threads must be at least 1, --size at least 16')
    torch.set_num_threads(args.threads)
    print(f'# {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), process CPU '
          f'clock, {args.runs} round-robin runs, medians of forward + backward in ms, batch '
          f'{BATCH} at {args.size}x{args.size}, load average {os.getloadavg()[0]:.2f}')
    header = ['variant', 'stage map', 'windows', 'heads', 'NCHW (official)', 'mmeff rows',
              'NCHW / rows', 'max rel err']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for variant in args.variants:
        for stage in range(len(EFFICIENTVIT_ARCHS[variant]['embed_dims'])):
            print('| ' + ' | '.join(one_stage(variant, stage, args.size, args.runs)) + ' |',
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
