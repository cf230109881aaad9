#!/usr/bin/env python
"""Write model-index.yml and configs/<family>/metafile.yml (OpenMMLab's model index).

    python tools/make_model_index.py [--root .]

Parameters and FLOPs are counted by mmeff.benchmark.complexity (about a minute on one core);
results and weights come from mmeff/benchmark/model_index.py.
"""
import argparse

import mmeff  # noqa: F401
from mmeff.benchmark.model_index import write_all

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='.', help='repository root (default: .)')
    for path in write_all(parser.parse_args().root):
        print(path)
