"""Run under torchrun: train each config given on the command line through ``tools/train.py``'s
code (``mmeff.engine.launch.train`` with ``--launcher pytorch``) in the same process group, and
let rank 0 write what each run ended with to the JSON file named first.

    torchrun --nproc_per_node 2 dropin_ddp_driver.py RESULTS.json CONFIG WORK_DIR [CONFIG WORK_DIR]...

One launch for all the drop-in recipes: importing MMDet / MMSeg and starting the group once is
most of the cost of a small run.
"""
import json
import sys

import torch.distributed as dist

import mmeff  # noqa: F401
from mmeff.engine import launch


def main(argv) -> None:
    results, pairs = argv[0], argv[1:]
    summary = {}
    for config, work_dir in zip(pairs[::2], pairs[1::2]):
        runner = launch.train([config, '--launcher', 'pytorch', '--work-dir', work_dir])
        loss = runner.message_hub.get_scalar('train/loss').current()
        summary[config] = dict(iter=runner.iter, loss=float(loss),
                               world_size=dist.get_world_size(),
                               find_unused=bool(runner.model.find_unused_parameters))
    if dist.get_rank() == 0:
        with open(results, 'w') as f:
            json.dump(summary, f)


if __name__ == '__main__':
    main(sys.argv[1:])
