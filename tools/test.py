#!/usr/bin/env python
"""Evaluate a checkpoint on a config's test set.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher none|pytorch]
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import mmeff  # noqa: E402,F401  (first, so every config can name mmeff types)
from mmeff.engine.launch import main  # noqa: E402

if __name__ == '__main__':
    main('test')
