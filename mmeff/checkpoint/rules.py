"""Key-rename rules: ordered regex (pattern, replacement) pairs that map one checkpoint layout's
keys to another's. Every family converter writes its layouts as such rules."""
import re
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple, Union

from mmeff.checkpoint.io import StateDict

RenameRule = Tuple[str, Union[str, Callable, None]]


def rename_key(key: str, rules: Sequence[RenameRule]) -> Optional[str]:
    """Apply regex (pattern, replacement) rules in order; a replacement of None drops the key
    (returns None) when its pattern matches. Replacements may be strings or functions."""
    for pattern, repl in rules:
        if repl is None:
            if re.search(pattern, key):
                return None
        else:
            key = re.sub(pattern, repl, key)
    return key


def rename_keys(state_dict: StateDict, rules: Sequence[RenameRule]) -> StateDict:
    """Apply :func:`rename_key` to every key, leaving out the dropped ones."""
    out = OrderedDict()
    for key, value in state_dict.items():
        key = rename_key(key, rules)
        if key is not None:
            out[key] = value
    return out


def dense_bias_rules(state_dict: StateDict) -> List[RenameRule]:
    """Rules for the bias tables of snap-research's dense EfficientFormer code (V1 and V2).

    Its detection / segmentation backbones learn ``attention_biases_seg``, a table over the
    offsets of the dense training grid (625 entries at 800, 256 at 512; 2500 / 1024 for V2's
    attention downsampling) and keep a never-used zero ``attention_biases`` buffer of the
    ImageNet size next to it. The ``_seg`` table is the learned one, so it takes the place of
    ``attention_biases`` and the buffer is dropped; index buffers are always derived data.
    """
    rules: List[RenameRule] = [(r'attention_bias_idxs(_seg)?$', None)]
    if any(k.endswith('attention_biases_seg') for k in state_dict):
        rules += [(r'attention_biases$', None), (r'attention_biases_seg$', 'attention_biases')]
    return rules
