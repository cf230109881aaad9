"""Which checkpoint ``tools/train.py --resume`` resumes from: the newest *intact* one.

mmengine resumes from whatever ``work_dir/last_checkpoint`` names and trusts the file: flipped
bytes load silently and train on NaN, a zero-byte file gives a bare ``EOFError``, an empty
``last_checkpoint`` gives "can not be found.". Here every candidate is verified the way mmeff
loads any checkpoint (``mmeff.checkpoint.read_state_dict``: not empty, equal to its digest
record, loadable under ``weights_only=True``, finite weights). ``--resume`` without a path tries
the checkpoint ``last_checkpoint`` names, then the other checkpoints of the work dir from the
newest, and reports each one it skipped and why; ``--resume PATH`` verifies PATH and refuses it
with the reason when it is damaged.
"""
import glob
import os.path as osp
import re
import sys
from typing import List, Optional, Tuple

from mmeff.checkpoint.integrity import CheckpointIntegrityError
from mmeff.checkpoint.io import checked_state_dict, load_file

#: (checkpoint path, why it was not used)
Skipped = List[Tuple[str, str]]


class NoIntactCheckpointError(FileNotFoundError):
    """``--resume`` found checkpoints in the work dir, but none of them is intact."""


def check_checkpoint(path: str, resume: bool = False) -> None:
    """Raise ``CheckpointIntegrityError`` (or ``FileNotFoundError``) with the reason when
    ``path`` is not safe to evaluate from or, with ``resume``, to resume from (that needs the
    training state mmengine's runner saves, not just weights); remote paths (``s3://``) are not
    checked."""
    if '://' in path:
        return
    checkpoint = load_file(path)
    if resume and not (isinstance(checkpoint, dict) and 'meta' in checkpoint
                       and 'state_dict' in checkpoint):
        raise CheckpointIntegrityError(
            f'{path!r} holds weights but no training state (no "meta" entry): --resume needs a '
            'checkpoint that tools/train.py wrote. To start a new run from these weights, '
            f'pass --cfg-options load_from={path} without --resume')
    checked_state_dict(checkpoint, path)


def _step(path: str) -> int:
    numbers = re.findall(r'\d+', osp.basename(path))
    return int(numbers[-1]) if numbers else -1


def _work_dir_checkpoints(work_dir: str) -> List[str]:
    """Checkpoints the checkpoint hook wrote in ``work_dir``, newest first (``best_*`` files and
    unfinished ``.tmp`` writes are not resume points)."""
    paths = [p for p in glob.glob(osp.join(glob.escape(work_dir), '*.pth'))
             if not osp.basename(p).startswith('best_')]
    return sorted(paths, key=lambda p: (osp.getmtime(p), _step(p)), reverse=True)


def _pointer_target(work_dir: str, skipped: Skipped) -> Optional[str]:
    """The checkpoint ``work_dir/last_checkpoint`` names, or None (reason added to skipped)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        latest = f.read().strip()
    if not latest:
        skipped.append((pointer, 'the file is empty (its write was interrupted)'))
        return None
    if '://' not in latest and not osp.isfile(latest):
        skipped.append((latest, f'named by {pointer} but does not exist'))
        return None
    return latest


def find_intact_checkpoint(work_dir: str) -> Tuple[Optional[str], Skipped]:
    """(newest intact checkpoint of ``work_dir`` or None, the candidates skipped and why)."""
    skipped: Skipped = []
    latest = _pointer_target(work_dir, skipped)
    candidates = ([latest] if latest else []) + [
        p for p in _work_dir_checkpoints(work_dir)
        if not latest or osp.abspath(p) != osp.abspath(latest)]
    for path in candidates:
        try:
            check_checkpoint(path, resume=True)
        except (CheckpointIntegrityError, FileNotFoundError) as err:
            skipped.append((path, str(err)))
            continue
        return path, skipped
    return None, skipped


def resolve_auto_resume(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (no path) resumes from, None for a fresh work dir.

    Skipped candidates are reported on stderr; when there were candidates but none is intact,
    :class:`NoIntactCheckpointError` lists them all, since silently starting from scratch would
    overwrite the run."""
    path, skipped = find_intact_checkpoint(work_dir)
    for bad, why in skipped:
        print(f'[mmeff] --resume: skipped {bad}: {why}', file=sys.stderr)
    if path is None and skipped:
        listing = '\n'.join(f'  {bad}: {why}' for bad, why in skipped)
        raise NoIntactCheckpointError(
            f'--resume found no intact checkpoint in {work_dir}:\n{listing}\n'
            'Restore a checkpoint from a backup and pass it with --resume PATH, or train '
            'from scratch without --resume (in another --work-dir to keep these files)')
    if path is not None:
        print(f'[mmeff] --resume: resuming from {path}', file=sys.stderr)
    return path
