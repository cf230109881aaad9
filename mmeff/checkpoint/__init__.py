"""Model-agnostic checkpoint handling: file io (weights_only, safe globals), key-rename rules,
the converter protocol and registry, and the load report (docs/design.md, "checkpoint").

This package never imports a model. Each backbone family keeps its own layouts in
``mmeff/models/backbones/<family>/checkpoint.py`` and registers its converter here when
``mmeff.models`` is imported (``import mmeff`` does that).
"""
from mmeff.checkpoint.integrity import (RECORD_SUFFIX, CheckpointIntegrityError,
                                        record_path, record_text, verify_digest)
from mmeff.checkpoint.io import (UnsafeCheckpointError, allow_runner_checkpoints, load_file,
                                 read_state_dict, strip_prefix, unwrap_state_dict)
from mmeff.checkpoint.loader import (CONVERTERS, ArchMismatchError, LayoutConverter, LoadReport,
                                     detect_family, load_pretrained, register_converter)
from mmeff.checkpoint.remote import (CheckpointDownloadError, is_remote, resolve_checkpoint,
                                     url_cache_dir)
from mmeff.checkpoint.rules import rename_key, rename_keys

__all__ = [
    'allow_runner_checkpoints', 'CheckpointDownloadError', 'is_remote', 'resolve_checkpoint',
    'url_cache_dir', 'load_file', 'read_state_dict', 'strip_prefix', 'unwrap_state_dict',
    'RECORD_SUFFIX', 'CheckpointIntegrityError', 'record_path', 'record_text', 'verify_digest',
    'UnsafeCheckpointError',
    'CONVERTERS', 'ArchMismatchError', 'detect_family', 'register_converter', 'LayoutConverter',
    'LoadReport', 'load_pretrained', 'rename_key', 'rename_keys'
]
