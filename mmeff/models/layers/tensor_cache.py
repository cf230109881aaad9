"""One process-wide cache of derived tensors, bounded in bytes (least recently used first out).

The attention blocks derive tensors from the input size alone (the (Nq, Nk) offset index of
:class:`~mmeff.models.layers.AttentionBias2d`, EfficientViT's deploy-form depth-wise conv
matrices) or from the input size and a parameter that does not change between calls in eval
(the gathered (heads, Nq, Nk) bias). Recomputing them every call costs time; keeping one per
input size costs memory without limit: detection and segmentation see dozens of padded sizes,
and at 800x1344 one EfficientFormer-L7 eval bias set is ~270 MiB. So every such tensor lives in
this one store, whose total size (all modules, all devices) never exceeds a byte budget:

- default :data:`DEFAULT_BUDGET_MB` MiB; the environment variable ``MMEFF_CACHE_MB`` (read at
  import, so it reaches launchers and data-parallel workers) or :func:`set_cache_budget` change
  it; 0 turns caching off. A value larger than the budget is returned but not kept.
- Budget per process: a process sees its devices' caches together (GPU tensors count too).
- Tensors are created outside inference mode (``torch.inference_mode(False)``) and without
  autograd history, so a tensor cached during an ``inference_mode`` evaluation can be used by
  the next training step (an inference tensor there fails: "Inference tensors cannot be saved
  for backward").

Modules hold a :class:`TensorCache` handle; its keys are private to it, a copied module
(``copy.deepcopy``, pickling) gets a new empty handle, and a collected handle's entries go.
"""
import itertools
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional, Set, Tuple

import torch

from mmeff.models.layers.graph_mode import is_recording_graph

#: default budget of all cached tensors of a process, in MiB (see the module docstring)
DEFAULT_BUDGET_MB = 128.0
ENV_VAR = 'MMEFF_CACHE_MB'
_MIB = 1 << 20


def _budget_from_env() -> int:
    raw = os.environ.get(ENV_VAR, '').strip()
    if not raw:
        return int(DEFAULT_BUDGET_MB * _MIB)
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not mib >= 0 or mib == float('inf'):
        raise ValueError(f'{ENV_VAR}={raw!r} is not a size: set it to the MiB that mmeff may '
                         f'keep in cached attention tensors (a number >= 0; 0 turns caching '
                         f'off; unset means {DEFAULT_BUDGET_MB:g})')
    return int(mib * _MIB)


def nbytes_of(value: Any) -> int:
    """Bytes held by a tensor or a (nested) list/tuple of tensors."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(nbytes_of(v) for v in value)
    raise TypeError(f'a TensorCache holds tensors or lists of tensors, got {type(value).__name__}')


class _Store:
    """The LRU map (owner, key) -> (value, nbytes) and its byte count."""

    def __init__(self, budget: int):
        self.budget = budget
        self.nbytes = 0
        # (owner, key) -> (value, nbytes, stamp); the stamp says which parameter values the
        # value was made from (an entry of an older stamp is replaced, not kept beside)
        self.entries: 'OrderedDict[Tuple[int, Hashable], Tuple[Any, int, Hashable]]' = \
            OrderedDict()
        self.keys_of: Dict[int, Set[Hashable]] = {}
        self.lock = threading.Lock()

    def get(self, owner: int, key: Hashable, stamp: Hashable) -> Optional[Any]:
        with self.lock:
            entry = self.entries.get((owner, key))
            if entry is None or entry[2] != stamp:
                return None
            self.entries.move_to_end((owner, key))
            return entry[0]

    def put(self, owner: int, key: Hashable, value: Any, stamp: Hashable) -> None:
        size = nbytes_of(value)
        with self.lock:
            self._pop(owner, key)
            if size > self.budget:
                return
            while self.nbytes + size > self.budget:
                self._pop(*next(iter(self.entries)))
            self.entries[(owner, key)] = (value, size, stamp)
            self.keys_of.setdefault(owner, set()).add(key)
            self.nbytes += size

    def _pop(self, owner: int, key: Hashable) -> None:
        entry = self.entries.pop((owner, key), None)
        if entry is not None:
            self.nbytes -= entry[1]
            keys = self.keys_of[owner]
            keys.discard(key)
            if not keys:
                del self.keys_of[owner]

    def drop_owner(self, owner: int) -> None:
        with self.lock:
            for key in list(self.keys_of.get(owner, ())):
                self._pop(owner, key)

    def shrink_to(self, budget: int) -> None:
        with self.lock:
            self.budget = budget
            while self.nbytes > budget:
                self._pop(*next(iter(self.entries)))


_STORE = _Store(_budget_from_env())
_owner_ids = itertools.count()


def set_cache_budget(mib: float) -> None:
    """Set the byte budget of all cached tensors of this process (MiB; 0 = no caching);
    entries beyond it are evicted at once, least recently used first."""
    if isinstance(mib, bool) or not isinstance(mib, (int, float)) or not mib >= 0 \
            or mib == float('inf'):
        raise ValueError(f'cache budget must be a number of MiB >= 0, got {mib!r}')
    _STORE.shrink_to(int(mib * _MIB))


def cache_budget_bytes() -> int:
    """The current budget in bytes."""
    return _STORE.budget


def cached_bytes() -> int:
    """Bytes the cache holds now (all modules, all devices)."""
    return _STORE.nbytes


def clear_all_caches() -> None:
    """Drop every cached tensor (the budget stays)."""
    with _STORE.lock:
        _STORE.entries.clear()
        _STORE.keys_of.clear()
        _STORE.nbytes = 0


def caching_allowed() -> bool:
    """False while tracing, scripting or compiling: a cached tensor would be baked into the
    graph as a constant of the size seen (or, for torch.export, does not exist)."""
    return not is_recording_graph()


class TensorCache:
    """A module's view of the process-wide cache: its own keys, the shared byte budget."""

    def __init__(self):
        self._owner = next(_owner_ids)
        weakref.finalize(self, _STORE.drop_owner, self._owner)

    def get_or_make(self, key: Hashable, make: Callable[[], Any],
                    stamp: Hashable = None) -> Any:
        """The cached value for ``key`` made at ``stamp``, or ``make()``'s (kept if it fits
        the budget, replacing the key's value of another stamp).

        ``make`` runs without grad and outside inference mode: the value is an ordinary
        constant, usable in training, ``no_grad`` and ``inference_mode`` alike. Callers that
        need autograd through the value must not cache it.
        """
        if not caching_allowed():
            return make()
        value = _STORE.get(self._owner, key, stamp)
        if value is None:
            with torch.inference_mode(False), torch.no_grad():
                value = make()
            _STORE.put(self._owner, key, value, stamp)
        return value

    def clear(self) -> None:
        _STORE.drop_owner(self._owner)

    def __len__(self) -> int:
        return len(_STORE.keys_of.get(self._owner, ()))

    def __deepcopy__(self, memo) -> 'TensorCache':
        return TensorCache()

    def __reduce__(self):
        return TensorCache, ()
