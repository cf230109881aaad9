"""Reading checkpoint files safely and unwrapping the containers different tools save.

torch >= 2.6 loads with ``weights_only=True``. Checkpoints written by mmengine's runner also hold
numpy scalars/arrays and ``HistoryBuffer`` objects in their message hub, which the safe unpickler
rejects. ``allow_runner_checkpoints()`` (called by ``import mmeff``) adds exactly those types to
torch's process-wide allow-list, so that mmengine's runner (resume) and MMDet's ``init_detector``
/ ``DetInferencer`` and MMSeg's ``init_model`` / ``MMSegInferencer`` load the checkpoints
``tools/train.py`` writes, with no wrapper. That does not turn the safety off: the
types are data containers whose unpickling runs no code of the file's choosing, and the one
callable, ``getattr``, is replaced by a stand-in that only returns ``HistoryBuffer``'s public
statistics methods (docs/weights.md, "Why loading runner checkpoints stays safe").
"""
import os
import pickle
from collections import OrderedDict
from typing import Any, Dict, Mapping

import numpy as np
import torch

from mmeff.checkpoint.integrity import (CheckpointIntegrityError, refuse_non_finite,
                                        verify_digest)
from mmeff.checkpoint.remote import TIMM_PREFIX, URL_SCHEMES, resolve_checkpoint

StateDict = Dict[str, torch.Tensor]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds pickled objects that ``torch.load(weights_only=True)`` refuses."""

_CONTAINER_KEYS = ('state_dict', 'model', 'model_ema', 'module', 'net')


def _numpy_safe_globals() -> list:
    """The numpy objects mmengine checkpoints pickle (message hub scalars and arrays)."""
    out = [np.ndarray, np.dtype]
    core = getattr(np, '_core', None) or np.core
    out.append(core.multiarray._reconstruct)
    if hasattr(core.multiarray, 'scalar'):
        out.append(core.multiarray.scalar)
    for name in ('float64', 'float32', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8',
                 'bool_'):
        out.append(getattr(np, name))
    out.extend(type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool'))
    return out


def _history_buffer_method(obj: Any, name: str) -> Any:
    """The stand-in for ``builtins.getattr`` in weights_only loading: ``HistoryBuffer``'s public
    methods (how its pickled state names its statistics), and nothing else."""
    from mmengine.logging.history_buffer import HistoryBuffer
    attr = vars(obj).get(name) if obj is HistoryBuffer else None
    if name.startswith('_') or not callable(attr):
        raise pickle.UnpicklingError(
            f'checkpoint calls getattr({obj!r}, {name!r}); with weights_only=True only '
            "HistoryBuffer's statistics methods may be looked up")
    return getattr(HistoryBuffer, name)


def _mmengine_safe_globals() -> list:
    """What mmengine's runner pickles besides tensors and numpy values.

    The message hub stores logged scalars as ``HistoryBuffer`` objects, whose state refers to
    their statistics methods as ``getattr(HistoryBuffer, 'mean')``. ``getattr`` itself is not
    allow-listed: the pickle's ``builtins.getattr`` is resolved to a stand-in that only returns
    public methods of ``HistoryBuffer`` and refuses anything else.
    """
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # loading plain weights does not need mmengine
        return []
    return [HistoryBuffer, (_history_buffer_method, 'builtins.getattr')]


def runner_safe_globals() -> list:
    """Everything an mmengine runner checkpoint holds besides tensors and containers."""
    return _numpy_safe_globals() + _mmengine_safe_globals()


def allow_runner_checkpoints() -> None:
    """Allow-list :func:`runner_safe_globals` for every ``torch.load(weights_only=True)`` of the
    process (``import mmeff`` calls it; calling again is harmless), so that mmengine's runner
    (resume, ``load_from``) and OpenMMLab's inference APIs read runner checkpoints.

    Process-wide on purpose: torch's ``safe_globals`` context manager *removes* its entries on
    exit, so a block-scoped allow-list would also undo this one for the rest of the process.
    """
    torch.serialization.add_safe_globals(runner_safe_globals())


def load_file(path: str, map_location: str = 'cpu') -> Any:
    """Read a checkpoint: a local file, a URL or a ``timm:`` tag (``remote.py`` fetches those
    once into their caches); ``torch.load`` with weights_only=True, ``.safetensors`` through
    safetensors; clear errors.

    An empty file, or one that differs from its digest record (``<path>.sha256``, written
    beside mmeff's training checkpoints), raises ``CheckpointIntegrityError`` before loading:
    damaged bytes can load silently otherwise (see ``mmeff.checkpoint.integrity``)."""
    path = resolve_checkpoint(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'checkpoint not found: {path!r}. Pass the path of a local file (an official '
            'release .pth, a timm state dict, or an mmeff/mmengine checkpoint), an http(s) URL '
            "or a timm tag such as 'timm:efficientformer_l1.snap_dist_in1k' (docs/weights.md "
            'lists every official weight). To make one, pretrain it with tools/train.py '
            'configs/cls/<variant>_in1k.py, or convert an official release with '
            'tools/convert_checkpoint.py SRC DST')
    verify_digest(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file as load_safetensors
        return load_safetensors(path, device=map_location if isinstance(map_location, str)
                                else 'cpu')
    # runner types are allow-listed by import mmeff (allow_runner_checkpoints)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'{path!r} could not be loaded with torch.load(weights_only=True): {err}. '
            'Only tensors, containers and numpy values are accepted. If you trust this '
            'file, re-save its state dict with torch.save(state_dict, path).') from err
    except Exception as err:  # truncated zip, EOFError, not a torch file at all
        raise CheckpointIntegrityError(
            f'{path!r} is not a readable checkpoint ({type(err).__name__}: {err}): the file '
            'is truncated, corrupted or not a PyTorch checkpoint. Use an intact copy '
            '(tools/train.py --resume picks the newest intact checkpoint of a work dir)'
        ) from err


def _load_for_mmengine(filename: str, map_location: Any = None) -> Any:
    """mmengine's ``CheckpointLoader`` scheme for URLs and ``timm:`` tags: mmeff's cache and
    ``weights_only`` loading (mmengine's own ``load_from_http`` loads with
    ``weights_only=False`` and keeps a cut download). In a distributed run rank 0 fetches the
    file first and the other ranks read it from the cache, as mmengine does."""
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        resolve_checkpoint(filename)
    if world_size > 1:
        barrier()
    return load_file(filename, map_location=map_location or 'cpu')


def register_checkpoint_schemes() -> None:
    """Route mmengine's loading of ``http(s)://`` and ``timm:`` names (``load_from``, MMDet's
    ``init_detector``, MMSeg's ``init_model``, ``Pretrained`` init of any module) through
    :func:`load_file` (``import mmeff`` calls it)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes=URL_SCHEMES + (TIMM_PREFIX,),
                                     loader=_load_for_mmengine, force=True)


def unwrap_state_dict(obj: Any) -> StateDict:
    """Find the tensor dict in ``{'model': ..}``, ``{'state_dict': ..}`` or a plain dict."""
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return OrderedDict(obj)
        for key in _CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            break
        seen += 1
    if isinstance(obj, Mapping):
        tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
        if tensors:
            return tensors
    raise ValueError('no state dict found in checkpoint: expected a dict of tensors, or one '
                     f'under one of the keys {_CONTAINER_KEYS}')


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Remove ``prefix`` from keys that have it (e.g. DDP's 'module.')."""
    if not any(k.startswith(prefix) for k in state_dict):
        return state_dict
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                       for k, v in state_dict.items())


def checked_state_dict(checkpoint: Any, source: str) -> StateDict:
    """The flat state dict of a loaded checkpoint ('module.' prefixes removed), refused when
    a weight is NaN/Inf: a diverged run's checkpoint would load and silently train on NaN."""
    state_dict = strip_prefix(unwrap_state_dict(checkpoint), 'module.')
    refuse_non_finite(state_dict, source)
    return state_dict


def read_state_dict(path: str) -> StateDict:
    """Load a checkpoint file, verified on the way (``load_file``), and return its flat,
    finite state dict (``checked_state_dict``)."""
    return checked_state_dict(load_file(path), path)
