"""Checkpoint layouts (official release / timm / mmpretrain / mmeff) and loading."""
# mmeff.models (backbones/base.py) imports .loader, and .loader imports mmeff.models.layers:
# initialise mmeff.models first so that `import mmeff.checkpoint` alone does not hit the cycle.
from .. import models  # noqa: F401  isort: skip
from .io import load_file, read_state_dict, safe_globals, strip_prefix, unwrap_state_dict
from .loader import (CONVERTERS, ArchMismatchError, LayoutConverter, LoadReport, detect_family,
                     load_pretrained, register_converter, rename_key, rename_keys)

__all__ = [
    'load_file', 'read_state_dict', 'safe_globals', 'strip_prefix', 'unwrap_state_dict',
    'CONVERTERS', 'ArchMismatchError', 'detect_family', 'register_converter', 'LayoutConverter', 'LoadReport', 'load_pretrained', 'rename_key',
    'rename_keys'
]
