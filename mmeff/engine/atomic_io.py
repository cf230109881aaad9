"""Atomic file replacement: a reader sees either the old file or the complete new one.

The pattern is write ``<name>.tmp`` -> fsync -> ``os.replace`` (atomic on POSIX and Windows for
paths on one file system) -> fsync the directory, so that neither an exception nor a kill nor a
power cut in the middle of a write can leave a truncated file under the final name.
"""
import contextlib
import os
import shutil
from typing import Iterator

TMP_SUFFIX = '.tmp'


def _fsync_path(path: str) -> None:
    """Flush a file (or a directory entry list) to disk; best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # e.g. directories on some file systems
        pass
    finally:
        os.close(fd)


def remove_path(path: str) -> None:
    """Remove a file or a directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def commit(tmp_path: str, final_path: str) -> None:
    """Move a fully written ``tmp_path`` over ``final_path`` atomically (after an fsync)."""
    if os.path.isfile(tmp_path):
        _fsync_path(tmp_path)
    elif os.path.isdir(final_path):  # a directory checkpoint cannot replace a non-empty one
        shutil.rmtree(final_path)
    os.replace(tmp_path, final_path)
    _fsync_path(os.path.dirname(os.path.abspath(final_path)))


@contextlib.contextmanager
def atomic_target(final_path: str) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``final_path``, on error it goes."""
    tmp_path = final_path + TMP_SUFFIX
    remove_path(tmp_path)  # left over by a killed earlier run
    try:
        yield tmp_path
    except BaseException:
        remove_path(tmp_path)
        raise
    commit(tmp_path, final_path)


def write_text_atomic(path: str, text: str) -> None:
    """Replace the text file ``path`` atomically."""
    with atomic_target(path) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)
