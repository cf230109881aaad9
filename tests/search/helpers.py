"""Synthetic latency tables and subnets shared by the search tests."""
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
