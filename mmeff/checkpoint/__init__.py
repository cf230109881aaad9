"""Checkpoint layouts (official release / timm / mmpretrain / mmeff) and loading."""
from .io import load_file, read_state_dict, safe_globals, strip_prefix, unwrap_state_dict
from .loader import (CONVERTERS, ArchMismatchError, LayoutConverter, LoadReport, detect_family,
                     load_pretrained, register_converter, rename_key, rename_keys)

__all__ = [
    'load_file', 'read_state_dict', 'safe_globals', 'strip_prefix', 'unwrap_state_dict',
    'CONVERTERS', 'ArchMismatchError', 'detect_family', 'register_converter', 'LayoutConverter', 'LoadReport', 'load_pretrained', 'rename_key',
    'rename_keys'
]
