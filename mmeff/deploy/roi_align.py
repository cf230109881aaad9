"""RoIAlign as two batched matrix products: the form coremltools can convert.

coremltools has no converter for ``torchvision::roi_align`` (and CoreML's own crop-resize op
samples one point per bin, not RoIAlign's averaged grid), so a Mask R-CNN graph for CoreML
needs RoIAlign written in ops it has. MMCV's ``RoIAlign`` (``pool_mode='avg'``) is separable:
for one RoI, output bin (p, q) averages ``g_h x g_w`` bilinear samples, and a bilinear sample
at (y, x) is a product of a row weight (in y) and a column weight (in x); the out-of-range rule
(a sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` contributes 0) is a product of
per-axis indicators and the ``1 / (g_h g_w)`` average splits into ``1/g_h`` and ``1/g_w``. So::

    out[r, c, p, q] = sum_h sum_w  Wy[r, p, h] * F[b_r, c, h, w] * Wx[r, q, w]

with ``Wy`` (R, out_h, H) holding, for output row p, the mean over its ``g_h`` sample rows of
the bilinear row weights (sample clamped to ``[0, H - 1]`` as MMCV does), ``Wx`` likewise. The
weights are built with elementwise ops, comparisons and a one-hot (no gather by data-dependent
indices); the adaptive grid (``sampling_ratio=0``: ``g = ceil(roi_size / out_size)`` per RoI)
uses a fixed maximal grid per axis and a mask. Equal to ``mmcv.ops.RoIAlign`` and
``torchvision.ops.roi_align`` to float rounding (tests/deploy/test_roi_align.py).

Memory: the intermediate product is (R, out_h, C, W) floats, e.g. 1000 RoIs x 7 x 256 x 80
(a 320 px input's stride-4 level) = 573 MB; CoreML runs it as one matmul. Over a pyramid
(:func:`roi_align_multilevel`) it stays that size: the levels share one product.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmeff.models.layers.graph_mode import is_recording_graph


def max_grid(size: int, out_size: int) -> int:
    """The largest adaptive sampling grid a RoI inside a ``size``-long feature axis can need
    (``ceil(roi_length / out_size)`` with ``roi_length <= size``; one more for the half-pixel
    shift). RoIs of the detectors are clipped to the image, so they stay inside."""
    return max(1, math.ceil((size + 1) / out_size))


def axis_weights(start: Tensor, length: Tensor, out_size: int, size: int,
                 sampling_ratio: int, grid: int) -> Tensor:
    """(R, out_size, size) weights of one axis: row p = the mean over the bin's samples of
    their bilinear weights on the ``size`` feature positions (MMCV's ``bilinear_interpolate``
    restricted to one axis; zero rows outside ``[-1, size]``).

    Args:
        start, length: (R,) the RoI's start and extent on this axis, in feature pixels (after
            the scale and the aligned half-pixel shift).
        sampling_ratio: samples per bin, or 0 for the adaptive ``ceil(length / out_size)``.
        grid: the static maximal number of samples per bin (``sampling_ratio`` when > 0).
    """
    bin_size = (length / out_size)[:, None, None]
    if sampling_ratio > 0:
        count = torch.full_like(length, float(sampling_ratio))
    else:
        count = torch.ceil(length / out_size).clamp(min=0)
    count = count[:, None, None]
    per_sample = bin_size / count.clamp(min=1)
    sample = torch.arange(grid, dtype=start.dtype, device=start.device)[None, None]
    row = torch.arange(out_size, dtype=start.dtype, device=start.device)[None, :, None]
    pos = start[:, None, None] + row * bin_size + (sample + 0.5) * per_sample  # (R, out, grid)
    # logical_and, not &: CoreML's converter has no aten.__and__
    inside = torch.logical_and(torch.logical_and(sample < count, pos >= -1.0), pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=size - 1)
    last = low >= size - 1
    pos = torch.where(last, low, pos)
    high = torch.where(last, low, low + 1)
    frac = pos - low
    cells = torch.arange(size, dtype=start.dtype, device=start.device)
    weights = (1 - frac)[..., None] * (low[..., None] == cells).to(start.dtype) + \
        frac[..., None] * (high[..., None] == cells).to(start.dtype)
    weights = weights * inside[..., None].to(start.dtype)
    return weights.sum(2) / count.clamp(min=1)


def roi_align(feat: Tensor, rois: Tensor, output_size: Tuple[int, int], spatial_scale: float,
              sampling_ratio: int = 0, aligned: bool = True,
              grid: Optional[Tuple[int, int]] = None) -> Tensor:
    """MMCV's ``RoIAlign`` (avg pooling) with matrix products; arguments as
    ``torchvision.ops.roi_align``.

    Args:
        feat: (B, C, H, W) features.
        rois: (R, 5) ``batch_index, x1, y1, x2, y2`` in image pixels.
        output_size: (out_h, out_w).
        grid: the static maximal adaptive grid per axis (``sampling_ratio=0``); by default
            :func:`max_grid` of the feature size, enough for any RoI inside the image. A RoI
            larger than the feature map needs more: pass it, or the bins of such a RoI average
            only the first ``grid`` samples (checked in eager mode, where it raises).
    Returns:
        (R, C, out_h, out_w).
    """
    return roi_align_multilevel([feat], rois, None, output_size, [spatial_scale],
                                sampling_ratio, aligned, grid)


def roi_align_multilevel(feats: Sequence[Tensor], rois: Tensor, levels: Optional[Tensor],
                         output_size: Tuple[int, int], spatial_scales: Sequence[float],
                         sampling_ratio: int = 0, aligned: bool = True,
                         grid: Optional[Tuple[int, int]] = None) -> Tensor:
    """:func:`roi_align` of each RoI at its own pyramid level (``levels``: (R,) ints; None
    for one level), in one pair of matrix products for all levels.

    The row weights of a RoI are non-zero only on the rows of its level (and image), so the
    levels' rows are stacked (columns zero-padded to the widest level) and the first product
    is one (R x out_h, C x W_max) matrix, the size of the largest level's alone; the column
    weights are those of the RoI's level. Pooling every RoI at every level and selecting
    would take one such product per level (about twice the memory over an FPN's levels).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    channels = feats[0].shape[1]
    width = max(f.shape[-1] for f in feats)
    row_weights, col_weights, rows = [], None, []
    for i, (feat, scale) in enumerate(zip(feats, spatial_scales)):
        wy, wx = _weights(feat.shape, rois, (out_h, out_w), scale, sampling_ratio, aligned,
                          grid)
        wx = F.pad(wx, (0, width - wx.shape[-1]))
        if levels is not None:
            chosen = (levels == i).to(wy.dtype)[:, None, None]
            wy, wx = wy * chosen, wx * chosen
        row_weights.append(wy)
        col_weights = wx if col_weights is None else col_weights + wx
        padded = F.pad(feat, (0, width - feat.shape[-1]))
        rows.append(padded.permute(0, 2, 1, 3).reshape(-1, channels * width))
    wy, rows = torch.cat(row_weights, -1), torch.cat(rows)
    # reshapes by -1: after an NMS the RoI count R is a run-time size, whose arithmetic
    # (R * out_h) the CoreML converter cannot express
    by_rows = wy.reshape(-1, wy.shape[-1]) @ rows                          # (R*out_h, C*W)
    by_rows = by_rows.reshape(-1, out_h * channels, width)
    out = by_rows @ col_weights.transpose(1, 2)                            # (R, out_h*C, out_w)
    return out.reshape(-1, out_h, channels, out_w).permute(0, 2, 1, 3)


def _weights(shape: Sequence[int], rois: Tensor, output_size: Tuple[int, int],
             spatial_scale: float, sampling_ratio: int, aligned: bool,
             grid: Optional[Tuple[int, int]]) -> Tuple[Tensor, Tensor]:
    """A level's (R, out_h, B x H) row weights (the RoI's image's rows only) and
    (R, out_w, W) column weights, for features of ``shape`` (B, C, H, W)."""
    out_h, out_w = output_size
    batch, _, height, width = shape
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    if sampling_ratio > 0:
        grid_h = grid_w = sampling_ratio
    else:
        grid_h, grid_w = grid if grid is not None else (max_grid(height, out_h),
                                                        max_grid(width, out_w))
        _check_grid(roi_h, roi_w, out_h, out_w, grid_h, grid_w)
    wy = axis_weights(y1, roi_h, out_h, height, sampling_ratio, grid_h)   # (R, out_h, H)
    wx = axis_weights(x1, roi_w, out_w, width, sampling_ratio, grid_w)    # (R, out_w, W)
    if batch > 1:  # the RoI's image: its row weights on the rows of that image only
        image = rois[:, 0].round()[:, None] == torch.arange(batch, dtype=rois.dtype,
                                                            device=rois.device)
        wy = (wy[:, :, None, :] * image[:, None, :, None].to(wy.dtype))
        wy = wy.reshape(-1, out_h, batch * height)
    return wy, wx


def _check_grid(roi_h: Tensor, roi_w: Tensor, out_h: int, out_w: int, grid_h: int,
                grid_w: int) -> None:
    """In eager mode: refuse a RoI whose adaptive grid exceeds the static one."""
    if is_recording_graph() or roi_h.numel() == 0 or _is_fake(roi_h):
        return
    need_h = int(torch.ceil(roi_h / out_h).max())
    need_w = int(torch.ceil(roi_w / out_w).max())
    if need_h > grid_h or need_w > grid_w:
        raise ValueError(f'a RoI needs a sampling grid of {need_h}x{need_w} per bin, more than '
                         f'the static {grid_h}x{grid_w} (RoIs larger than the feature map); '
                         'pass grid=(h, w) large enough')


def _is_fake(t: Tensor) -> bool:
    """Whether ``t`` is a fake / functional tensor of a graph capture (no data to check)."""
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(t) or type(t) is not Tensor and not isinstance(t, torch.nn.Parameter)
