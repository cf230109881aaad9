"""Key-rename rules: ordered regex (pattern, replacement) pairs that map one checkpoint layout's
keys to another's. Every family converter writes its layouts as such rules."""
import re
from collections import OrderedDict
from typing import Callable, Optional, Sequence, Tuple, Union

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
