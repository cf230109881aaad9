"""Checkpoint layouts (official release / timm / mmpretrain / mmeff) and loading."""
from .io import load_file, read_state_dict, safe_globals, strip_prefix, unwrap_state_dict
from .loader import (ArchMismatchError, LayoutConverter, LoadReport, load_pretrained,
                     rename_keys)

__all__ = [
    'load_file', 'read_state_dict', 'safe_globals', 'strip_prefix', 'unwrap_state_dict',
    'ArchMismatchError', 'LayoutConverter', 'LoadReport', 'load_pretrained', 'rename_keys'
]
