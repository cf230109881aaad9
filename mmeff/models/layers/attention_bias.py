"""Learned relative-position attention bias that works at any resolution.

All three families (EfficientFormer's MHSA, EfficientFormerV2's attention and attention
downsampling, EfficientViT's window attention) learn one scalar per head for every 2-D
*absolute offset* (|dy|, |dx|) between a query and a key on the grid seen at pretraining time
(7x7 at 224x224). The parameter is that offset table, shape (num_heads, Rh * Rw).

For another grid (Hk, Wk) we resize the *offset table* bicubically to (Hk, Wk) and gather the
N_q x N_k bias from it. We never interpolate the N x N bias matrix itself (the official dense
code does that: it is slow and memory-hungry at 1333x800 and on non-square inputs it stops being
a function of the offset). On the pretraining grid no resizing happens, so the bias equals the
checkpoint's bit for bit.

Both derived tensors live in the process-wide, byte-bounded cache of
:mod:`mmeff.models.layers.tensor_cache` (default 128 MiB for all modules, ``MMEFF_CACHE_MB``):
the (Nq, Nk) offset index depends on the grids only and is shared by every module; the gathered
bias is kept per module in eval mode when no gradient is wanted, stamped with the table's
version, so loading weights, an optimizer step or ``.to()`` cannot leave it stale. Training
keeps no bias (entering train mode drops the module's eval biases), only bounded indices.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmeff.models.layers.tensor_cache import TensorCache, caching_allowed

Size2d = Tuple[int, int]


def resize_offset_table(table: torch.Tensor, src_hw: Size2d, dst_hw: Size2d) -> torch.Tensor:
    """Resize a (heads, Rh*Rw) offset table to (heads, Hk*Wk), bicubic, exact when unchanged."""
    if tuple(src_hw) == tuple(dst_hw):
        return table
    heads = table.shape[0]
    grid = table.reshape(1, heads, src_hw[0], src_hw[1])
    out = F.interpolate(grid.float(), size=tuple(dst_hw), mode='bicubic', align_corners=False)
    return out.to(table.dtype).reshape(heads, dst_hw[0] * dst_hw[1])


def relative_offset_index(query_hw: Size2d, key_hw: Size2d, query_stride: int = 1,
                          device: Optional[torch.device] = None) -> torch.Tensor:
    """(Nq, Nk) index into a (Hk x Wk) table of absolute offsets, in key-grid units.

    Query i sits at key-grid position ``i * query_stride`` (stride 2 for V2's attention
    downsampling, whose queries live on the subsampled grid).
    """
    qy = torch.arange(query_hw[0], device=device) * query_stride
    qx = torch.arange(query_hw[1], device=device) * query_stride
    ky = torch.arange(key_hw[0], device=device)
    kx = torch.arange(key_hw[1], device=device)
    dy = (qy[:, None, None, None] - ky[None, None, :, None]).abs()
    dx = (qx[None, :, None, None] - kx[None, None, None, :]).abs()
    index = dy * key_hw[1] + dx
    return index.reshape(query_hw[0] * query_hw[1], key_hw[0] * key_hw[1])


def gather_offsets(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The (heads, Nq, Nk) bias ``table[:, index]`` of a (heads, T) table, as one
    ``index_select``: the same values, and its backward is an ``index_add`` instead of the
    sorting ``index_put(accumulate=True)`` of advanced indexing: forward + backward 2.7x
    faster on one CPU thread for 8 heads on the 1024 x 1024 grid of V2's stride-16 attention at
    512x512, 4x on 16x16 grids (docs/model_zoo.md, "Dense resolutions"); the training step
    gathers every attention bias once per forward."""
    return torch.index_select(table, 1, index.reshape(-1)).reshape(
        table.shape[0], *index.shape)


#: the offset indices, one per (grids, stride, device), shared by all modules
_INDEX_CACHE = TensorCache()


class AttentionBias2d(nn.Module):
    """Per-head learned bias over 2-D absolute offsets, resizable to any query/key grid.

    Args:
        num_heads: number of attention heads.
        table_size: (Rh, Rw) offset range learned at pretraining resolution, e.g. (7, 7).
    """

    def __init__(self, num_heads: int, table_size: Sequence[int]):
        super().__init__()
        if isinstance(table_size, int):
            table_size = (table_size, table_size)
        self.num_heads = num_heads
        self.table_size: Size2d = (int(table_size[0]), int(table_size[1]))
        self.table = nn.Parameter(torch.zeros(num_heads, self.table_size[0] * self.table_size[1]))
        self._bias_cache = TensorCache()  # eval biases of this module, per grid
        self.frozen: Optional[torch.Tensor] = None  # set by freeze() for deployment
        self._frozen_grid: Optional[tuple] = None  # (query_hw, key_hw, stride) it was made for

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, table_size={self.table_size}'

    def forward(self, query_hw: Size2d, key_hw: Optional[Size2d] = None,
                query_stride: int = 1) -> torch.Tensor:
        """Return the (num_heads, Nq, Nk) bias for the given grids."""
        key_hw = tuple(query_hw) if key_hw is None else tuple(key_hw)
        query_hw = tuple(query_hw)
        frozen = self.frozen
        # the grid itself, not just N_q x N_k: a 4x6 and a 6x4 window have different biases
        if frozen is not None and self._frozen_grid == (query_hw, key_hw, query_stride):
            return frozen
        table = self.table

        def gather() -> torch.Tensor:
            index = _INDEX_CACHE.get_or_make(
                (query_hw, key_hw, query_stride, table.device),
                lambda: relative_offset_index(query_hw, key_hw, query_stride, table.device))
            return gather_offsets(resize_offset_table(table, self.table_size, key_hw), index)

        if self.training or (torch.is_grad_enabled() and table.requires_grad) or \
                not caching_allowed():
            return gather()  # autograd needs the graph; the table changes every step
        # (caching_allowed() first: torch.export's fake tensors have no data_ptr())
        return self._bias_cache.get_or_make(
            (query_hw, key_hw, query_stride, table.device, table.dtype), gather,
            stamp=(table._version, table.data_ptr()))

    def clear_cache(self) -> None:
        """Drop this module's cached biases (the shared offset indices stay)."""
        self._bias_cache.clear()

    @torch.no_grad()
    def freeze(self, query_hw: Size2d, key_hw: Optional[Size2d] = None,
               query_stride: int = 1) -> None:
        """Precompute the bias for one grid as a constant buffer (deploy/export)."""
        was_training = self.training
        self.train(False)
        self.frozen = None
        self.frozen = self(query_hw, key_hw, query_stride).clone()
        self._frozen_grid = (tuple(query_hw), tuple(query_hw if key_hw is None else key_hw),
                             query_stride)
        self.train(was_training)

    def train(self, mode: bool = True):
        if mode:
            self.clear_cache()  # nothing of eval outlives it into training
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()
        out = super()._apply(fn, *args, **kwargs)
        if self.frozen is not None:
            self.frozen = fn(self.frozen)
        return out

    def accepts_resized(self, name: str, shape: Sequence[int]) -> bool:
        """Whether a checkpoint tensor of ``shape`` for parameter ``name`` can be loaded here
        (the checkpoint loader asks before it reports a shape mismatch)."""
        return name == 'table' and len(shape) == 2 and shape[0] == self.num_heads and \
            table_size_of(shape[1]) is not None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Accept tables learned at another resolution: resize them (square tables only)."""
        self.clear_cache()
        self.frozen = None
        key = prefix + 'table'
        if key in state_dict:
            incoming = state_dict[key]
            if incoming.dim() == 2 and incoming.shape[0] == self.num_heads and \
                    incoming.shape[1] != self.table.shape[1]:
                src = table_size_of(incoming.shape[1])
                if src is not None:
                    state_dict[key] = resize_offset_table(incoming, src, self.table_size)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def table_size_of(numel: int) -> Optional[Size2d]:
    """Square offset-table size for a flat table length, or None if it is not square."""
    side = int(round(math.sqrt(numel)))
    return (side, side) if side * side == numel else None
