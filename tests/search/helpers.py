"""Synthetic latency tables and subnets shared by the search tests."""
from pathlib import Path

from mmengine.config import Config

from mmeff.search.lut import LatencyLUT
from mmeff.search.space import Subnet

WIDTHS = (32, 64, 96, 128)


def synthetic_lut(max_widths=WIDTHS) -> LatencyLUT:
    """Latency grows with width; MB3D costs twice MB4D; deeper stages are cheaper per block."""
    lut = LatencyLUT(meta=dict(img_size=64, backend='synthetic'))
    grids = [range(16, w + 1, 16) for w in max_widths]
    for w in grids[0]:
        lut.add('stem', 0, 3, w, 0.5 + w / 100)
    for i in range(1, 4):
        for w_in in grids[i - 1]:
            for w in grids[i]:
                lut.add('embed', i, w_in, w, w_in * w / 10000)
    for i in range(4):
        for w in grids[i]:
            lut.add('mb4d', i, None, w, w / 16 / (i + 1))
            if i >= 2:
                lut.add('mb3d', i, None, w, 2 * w / 16 / (i + 1))
    for w in grids[3]:
        lut.add('head', 3, None, w, 0.01 * w)
    return lut


def full_subnet(num_3d: int = 1) -> Subnet:
    blocks = [['4d'] * 2, ['4d'] * 2, ['4d'] * 3, ['4d'] * (3 - num_3d) + ['3d'] * num_3d]
    return Subnet.create(WIDTHS, blocks)


def uniform_importance(value: float = 1.0):
    return [[value] * 2, [value] * 2, [value] * 3, [value] * 3]


def shrink_to_tiny(cfg: Config, data_root: Path) -> Config:
    """A search config on a 20-image 32x32 toy tree, one epoch (the slow tests)."""
    cfg.toy_imagenet = dict(num_train=20, num_val=10, size=(32, 32), seed=0)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(data_root=str(data_root), img_size=32)
        loader.batch_size = 10
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=1)]
    cfg.default_hooks.checkpoint.interval = 1
    return cfg
