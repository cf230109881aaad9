#!/usr/bin/env python
"""Convert a checkpoint of any known layout to mmeff's canonical layout (or another one).

    python tools/convert_checkpoint.py SRC DST [--family auto|<family>] [--to mmeff|timm]

SRC may be a whole detector / segmentor of the official dense code (an MMDet 2 / MMSeg 0.x
checkpoint: ``backbone.`` + the official keys next to ``neck.``, ``rpn_head.``, ``roi_head.``,
``decode_head.``): every key is written, the backbone renamed and the rest as it is (MMDet 3 /
MMSeg 1 use the same names for those parts), so DST loads into the matching config of
``configs/`` with ``load_from=DST`` or ``tools/test.py CONFIG DST``. Input errors (a missing
file, a file in no known layout) exit with status 2.

The family and layout are detected by the converters the model families register
(``mmeff.checkpoint.CONVERTERS``); nothing here is family-specific. The default output is
``{'state_dict': canonical}`` (mmeff's classifier keys ``backbone.*`` + ``head.*``), which
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` and ``load_pretrained`` read directly.
Exit status: 0 on success, 2 for an input error (a missing, damaged or unknown checkpoint, a
layout the family cannot write), reported as one message.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

import mmeff.models  # noqa: F401  (registers every family's converter)
from mmeff.checkpoint import CONVERTERS, detect_family, read_state_dict
from mmeff.engine.launch import INPUT_ERRORS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint to read (official, timm, mmpretrain, mmeff, ...)')
    parser.add_argument('dst', help='file to write')
    parser.add_argument('--family', default='auto', choices=['auto'] + sorted(CONVERTERS),
                        help='model family (default: detect it)')
    parser.add_argument('--to', default='mmeff',
                        help="output layout: 'mmeff' (canonical, default) or another layout the "
                             "family can write (e.g. 'timm')")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> str:
    """Convert ``args.src`` to ``args.dst``; returns the summary to print."""
    state_dict = read_state_dict(args.src)
    try:
        if args.family == 'auto':
            family, layout = detect_family(state_dict)
        else:
            family = args.family
            layout = CONVERTERS[family].detect_layout(state_dict)
    except ValueError as err:
        raise ValueError(f'{args.src}: {err}') from err
    converter = CONVERTERS[family]
    if args.to not in converter.writable_layouts:
        raise ValueError(f'{family} can be written as {list(converter.writable_layouts)}, '
                         f'not {args.to!r}')
    if layout is None:
        canonical, layout = converter.convert(state_dict)
    else:
        canonical = converter.to_canonical(state_dict, layout)
    arch = converter.guess_arch(canonical) or 'custom/unknown'
    out = converter.from_canonical(canonical, args.to)
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': out} if args.to == 'mmeff' else out, args.dst)
    dropped = len(state_dict) - len(canonical)
    return (f'family: {family}\nlayout: {layout}\narch: {arch}\n'
            f'keys: {len(state_dict)} read, {len(canonical)} canonical ({dropped} dropped: '
            f'derived index buffers and buffers the official code never uses), {len(out)} '
            f'written as {args.to!r} to {args.dst}')


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        print(convert(args))
    except INPUT_ERRORS + (RuntimeError,) as err:  # RuntimeError: damaged / unreadable file
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
