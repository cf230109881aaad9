#!/usr/bin/env python
"""Train a detector, segmentor or classifier from an mmengine config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--cfg-options k=v ...] [--launcher none|pytorch]

The config's default_scope ('mmdet', 'mmseg', 'mmeff') selects the package; see
mmeff/engine/launch.py for what is checked and made safe before training starts.
"""

import mmeff  # noqa: F401  (first, so every config can name mmeff types)
from mmeff.engine.launch import main

if __name__ == '__main__':
    main('train')
