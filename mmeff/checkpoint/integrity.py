"""Checkpoint integrity: a digest record beside each checkpoint, and the checks that read it.

A training run that resumes from a damaged file (flipped bytes, a truncated or zero-byte write)
may load without any error and then train on garbage: torch's zip reader does not verify the
payload, and a NaN tensor is a valid tensor. So every checkpoint mmeff's checkpoint hook writes
gets a record, ``<checkpoint>.sha256``, in ``sha256sum`` format (``sha256sum -c`` verifies it
by hand), written atomically before the checkpoint itself is moved into place. Resuming and
loading check, in this order:

1. the file is not empty;
2. its SHA-256 equals the record, when there is one (files from elsewhere have none);
3. it loads with ``torch.load(weights_only=True)``;
4. every floating-point tensor of its state dict is finite.

This module computes and checks; writing the record atomically is the engine's job
(``mmeff.engine.hooks.AtomicCheckpointHook``), which keeps this package free of engine imports.
"""
import hashlib
import os
from typing import Any, List, Mapping, Optional

import torch

#: suffix of the digest record that sits beside a checkpoint
RECORD_SUFFIX = '.sha256'
_CHUNK = 1 << 20


class CheckpointIntegrityError(ValueError):
    """A checkpoint file is empty, does not match its digest record, cannot be read, or holds
    non-finite weights."""


def record_path(path: str) -> str:
    """The digest record of checkpoint ``path``."""
    return os.fspath(path) + RECORD_SUFFIX


def file_digest(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def record_text(path: str, name: Optional[str] = None) -> str:
    """The ``sha256sum`` line recording the digest of ``path`` under the file name ``name``
    (default: its own base name; a checkpoint written to a temp file records its final name)."""
    return f'{file_digest(path)}  {name or os.path.basename(path)}\n'


def read_record(path: str) -> Optional[str]:
    """The digest recorded for checkpoint ``path``, or None when it has no record."""
    record = record_path(path)
    if not os.path.isfile(record):
        return None
    with open(record) as f:
        fields = f.read().split()
    if not fields:
        raise CheckpointIntegrityError(
            f'the digest record {record!r} of {path!r} is empty: the record was interrupted, so '
            'the checkpoint cannot be trusted. Resume from an earlier checkpoint, or delete '
            'the record if you know the checkpoint is intact')
    return fields[0]


def verify_digest(path: str) -> None:
    """Raise :class:`CheckpointIntegrityError` when ``path`` is empty or differs from its
    record; a file without a record passes (it was not written by mmeff)."""
    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        raise CheckpointIntegrityError(
            f'checkpoint {path!r} is an empty (zero-byte) file: its write was interrupted. '
            'Resume from an earlier checkpoint (tools/train.py --resume picks the newest intact '
            'one) or delete it')
    expected = read_record(path)
    if expected is not None and file_digest(path) != expected:
        raise CheckpointIntegrityError(
            f'checkpoint {path!r} does not match its digest record {record_path(path)!r} '
            f'({os.path.getsize(path)} bytes): the file was truncated or corrupted after it '
            'was written. Resume from an earlier checkpoint (tools/train.py --resume picks the '
            'newest intact one) or restore the file from a backup')


def non_finite_tensors(state_dict: Mapping[str, Any]) -> List[str]:
    """Keys of floating-point tensors holding NaN or Inf."""
    return [key for key, value in state_dict.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())]


def refuse_non_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointIntegrityError` when any weight of ``state_dict`` is NaN/Inf."""
    bad = non_finite_tensors(state_dict)
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise CheckpointIntegrityError(
            f'checkpoint {source!r} holds non-finite (NaN/Inf) weights in {len(bad)} tensors '
            f'({shown}): the run that wrote it had diverged. Resume from an earlier checkpoint '
            'and lower the learning rate, or enable gradient clipping')
