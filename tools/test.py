#!/usr/bin/env python
"""Evaluate a checkpoint on a config's test set.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--out FILE.pkl]
                                           [--cfg-options k=v ...] [--launcher none|pytorch]
"""

import mmeff  # noqa: F401  (first, so every config can name mmeff types)
from mmeff.engine.launch import main

if __name__ == '__main__':
    main('test')
