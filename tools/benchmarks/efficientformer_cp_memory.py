#!/usr/bin/env python
"""Training memory of the EfficientFormer backbone with and without ``with_cp`` (CPU).

    python tools/benchmarks/efficientformer_cp_memory.py [--arch l1] [--size 512 512] [--batch 2]

Two figures per setting, each measured in a fresh subprocess so that peaks do not mix:
bytes autograd saves for backward (exact; what activation checkpointing trades away) and the
process's peak resident memory (``resource.ru_maxrss``), in total and above its level before
the forward + backward step (the total includes the interpreter, torch and the weights).
"""
import argparse
import json
import resource
import subprocess
import sys
import time


def measure(arch: str, with_cp: bool, size, batch: int) -> dict:
    import torch

    from mmeff.benchmark.memory import saved_tensor_bytes
    from mmeff.models.backbones import EfficientFormer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = EfficientFormer(arch, with_cp=with_cp).train()
    x = torch.randn(batch, 3, *size)
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outputs = []
    start = time.perf_counter()
    saved = saved_tensor_bytes(lambda: outputs.append(sum(o.float().mean() for o in model(x))))
    outputs[0].backward()
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(saved_mib=saved / 2**20, peak_rss_mib=peak_kib / 1024,
                step_rss_mib=(peak_kib - base_kib) / 1024, seconds=seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='l1')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 512), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--child', choices=['cp', 'plain'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.arch, args.child == 'cp', args.size, args.batch)))
        return 0
    results = {}
    for mode in ('plain', 'cp'):
        out = subprocess.run([sys.executable, __file__, '--child', mode, '--arch', args.arch,
                              '--size', *map(str, args.size), '--batch', str(args.batch)],
                             capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    print(f'EfficientFormer-{args.arch} backbone, train mode, input {args.batch}x3x'
          f'{args.size[0]}x{args.size[1]}, one forward + backward, CPU, 1 thread')
    for mode, label in (('plain', 'with_cp=False'), ('cp', 'with_cp=True ')):
        r = results[mode]
        print(f'{label}: saved for backward {r["saved_mib"]:7.1f} MiB; peak RSS '
              f'{r["peak_rss_mib"]:7.1f} MiB, of which {r["step_rss_mib"]:7.1f} MiB above the '
              f'level before the step; {r["seconds"]:.2f} s')
    plain, cp = results['plain'], results['cp']
    print(f'with_cp saves {plain["saved_mib"] - cp["saved_mib"]:.1f} MiB of activations '
          f'({cp["saved_mib"] / plain["saved_mib"]:.1%} kept) and '
          f'{plain["step_rss_mib"] - cp["step_rss_mib"]:.1f} MiB of the step\'s peak RSS')
    return 0


if __name__ == '__main__':
    sys.exit(main())
