"""Memory measurements that work on CPU: bytes autograd keeps for the backward pass, and bytes
a run keeps beyond the model (what the attention caches hold as input sizes change).

Activation checkpointing trades recomputation for the first, so it is the figure to compare
with and without ``with_cp`` (CUDA's ``max_memory_allocated`` is not available on CPU). The
second is what must stay within the cache budget in long runs
(``python -m mmeff.benchmark.memory`` prints it for EfficientFormer-L7 and V2-L).
"""
import gc
import itertools
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import torch


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Run ``fn`` (a forward that builds a graph) and return the bytes of distinct storages
    autograd saved for backward. Parameters are counted too (they are saved as well)."""
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def kept_tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of every live tensor storage of the process that is not one of ``model``'s
    parameters, buffers or gradients: what a run keeps beyond the model (caches, leaks).

    Found through the garbage collector, independently of any cache's own count; call it
    before and after a run and compare (the caller's own tensors count too)."""
    gc.collect()
    owned = {t.untyped_storage().data_ptr() for t in itertools.chain(
        model.parameters(), model.buffers(),
        (p.grad for p in model.parameters() if p.grad is not None))}
    with warnings.catch_warnings():  # isinstance() on torch.distributed's deprecated names
        warnings.simplefilter('ignore', FutureWarning)
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    storages = {}
    for tensor in tensors:
        if tensor.device.type == 'meta':
            continue
        try:
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
        except RuntimeError:  # fake / functional tensors left by torch.compile or export own
            continue          # no memory
        if pointer and pointer not in owned:
            storages[pointer] = storage.nbytes()
    return sum(storages.values())


def cache_growth(model: torch.nn.Module, sizes: Sequence[Tuple[int, int]],
                 batch: int = 1) -> List[int]:
    """Bytes kept beyond the model after each input size, each seen once in train mode and
    once in eval mode (both forward-only under ``no_grad``: a backward adds no cache)."""
    base = kept_tensor_bytes(model)
    kept = []
    for size in sizes:
        for training in (True, False):
            model.train(training)
            with torch.no_grad():
                model(torch.randn(batch, 3, *size))
        kept.append(kept_tensor_bytes(model) - base)
    return kept


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mmeff.benchmark.memory``: the memory the attention caches keep as new
    input sizes arrive, with the default budget and with none (1 TiB: what the shared cache
    would hold without its bound)."""
    import argparse
    import platform

    from mmeff.models.backbones import EfficientFormer, EfficientFormerV2
    from mmeff.models.layers import DEFAULT_BUDGET_MB, clear_all_caches, set_cache_budget
    parser = argparse.ArgumentParser(description=main.__doc__.split(':', 1)[1].strip())
    parser.add_argument('--sizes', nargs='+', default=['800x1344', '800x1216', '768x1344'],
                        help='input sizes HxW (default: three padded COCO shapes)')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    try:
        sizes = [tuple(int(v) for v in s.lower().split('x')) for s in args.sizes]
        assert all(len(s) == 2 and min(s) > 0 for s in sizes)
    except (ValueError, AssertionError):
        parser.error(f'--sizes takes HxW pairs of positive ints, e.g. 800x1344; got '
                     f'{args.sizes}')
    torch.set_num_threads(args.threads)
    print(f'{platform.processor() or platform.machine()}, torch {torch.__version__}, CPU, '
          f'{args.threads} thread(s), batch 1, per size one train-mode and one eval-mode '
          f'forward (no_grad), one run; MiB kept beyond parameters and buffers')
    for cls, arch in ((EfficientFormer, 'l7'), (EfficientFormerV2, 'l')):
        model = cls(arch, out_indices=(0, 1, 2, 3))
        for label, budget in ((f'budget {DEFAULT_BUDGET_MB:g} MiB', DEFAULT_BUDGET_MB),
                              ('no bound (1 TiB)', 1 << 20)):
            set_cache_budget(budget)
            clear_all_caches()
            kept = cache_growth(model, sizes)
            print(f'{cls.__name__}-{arch}, {label:>16}: ' + ', '.join(
                f'after {h}x{w} {b / 2**20:.1f}' for (h, w), b in zip(sizes, kept)))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
