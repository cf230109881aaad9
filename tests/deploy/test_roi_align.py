"""The matrix-product RoIAlign (mmeff.deploy.roi_align, the CoreML form) equals MMCV's and
torchvision's RoIAlign on random features and RoIs: tiny, large, partly outside the image,
adaptive (sampling_ratio 0) and fixed grids, more than one image."""
import pytest
import torch

from mmeff.deploy.roi_align import roi_align


def _rois(num: int, size: float, batch: int, gen: torch.Generator) -> torch.Tensor:
    """RoIs in image pixels: a third tiny (< 2 px), a third large, a third reaching outside
    the image; every RoI's image index below ``batch``."""
    xy = torch.rand(num, 2, generator=gen) * size * 1.2 - 0.1 * size
    extent = torch.rand(num, 2, generator=gen) * size
    extent[: num // 3] = torch.rand(num // 3, 2, generator=gen) * 2        # tiny
    extent[num // 3: 2 * num // 3] *= 1.5                                  # large, outside
    index = torch.randint(0, batch, (num, 1), generator=gen).float()
    return torch.cat([index, xy, xy + extent], 1)


@pytest.mark.parametrize('sampling_ratio, out, batch, aligned', [
    (0, 7, 1, True), (2, 7, 1, True), (0, 14, 2, True), (2, 14, 2, True), (0, 7, 1, False)])
def test_matrix_roi_align_equals_mmcv_and_torchvision(sampling_ratio, out, batch, aligned):
    from mmcv.ops import RoIAlign
    from torchvision.ops import roi_align as tv_roi_align
    gen = torch.Generator().manual_seed(sampling_ratio + out + batch)
    feat = torch.randn(batch, 5, 24, 20, generator=gen)
    rois = _rois(60, 96.0, batch, gen)
    scale = 0.25
    # RoIs reach up to 1.5x the image: an adaptive grid as large as they need
    grid = (int(torch.ceil((rois[:, 4] - rois[:, 2]) * scale / out).max()),
            int(torch.ceil((rois[:, 3] - rois[:, 1]) * scale / out).max()))
    got = roi_align(feat, rois, (out, out), scale, sampling_ratio, aligned=aligned, grid=grid)
    mmcv = RoIAlign(out, scale, sampling_ratio, aligned=aligned)(feat, rois)
    tv = tv_roi_align(feat, rois, (out, out), scale, sampling_ratio, aligned=aligned)
    assert got.shape == (60, 5, out, out)
    assert mmcv.abs().amax(dim=(1, 2, 3)).gt(0).sum() > 30  # most RoIs see the features
    assert torch.allclose(got, mmcv, rtol=0, atol=1e-5), (got - mmcv).abs().max()
    assert torch.allclose(got, tv, rtol=0, atol=1e-5), (got - tv).abs().max()


def test_default_grid_covers_rois_inside_the_image_and_refuses_larger_ones():
    from mmcv.ops import RoIAlign
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(1, 4, 16, 16, generator=gen)
    rois = torch.tensor([[0, 0.0, 0.0, 64.0, 64.0], [0, 3.0, 5.0, 40.0, 9.0]])
    expected = RoIAlign(7, 0.25, 0, aligned=True)(feat, rois)
    assert torch.allclose(roi_align(feat, rois, (7, 7), 0.25), expected, rtol=0, atol=1e-5)
    huge = torch.tensor([[0, -100.0, -100.0, 200.0, 200.0]])
    with pytest.raises(ValueError, match='pass grid='):
        roi_align(feat, huge, (7, 7), 0.25)
