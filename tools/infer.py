#!/usr/bin/env python
"""Draw a detector's or segmentor's predictions on your images.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_DIR [--out-dir DIR] [--device cpu]
                          [--score-thr 0.3] [--opacity 0.5] [--batch-size 1]

Writes DIR/vis/<image> (the drawing) and the raw predictions (mmeff/engine/infer.py).
"""

import mmeff  # noqa: F401  (first, so every config can name mmeff types)
from mmeff.engine.infer import main

if __name__ == '__main__':
    main()
