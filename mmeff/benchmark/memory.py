"""Training-memory measurement that works on CPU: bytes autograd keeps for the backward pass.

Activation checkpointing trades recomputation for exactly this memory, so it is the figure to
compare with and without ``with_cp`` (CUDA's ``max_memory_allocated`` is not available on CPU).
"""
from typing import Callable

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
