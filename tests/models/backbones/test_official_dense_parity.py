"""mmeff's backbones reproduce the official dense backbones (snap-research EfficientFormer V1/V2
detection code, microsoft/Cream EfficientViT downstream code) on the same weights at the
checkpoint's training size: features recorded from the official code, loaded from a file in the
official MMDet 2 layout (tests/data/official_dense/README.md)."""
from pathlib import Path

import pytest
import torch

from mmeff.registry import MODELS
from mmeff.testing import norm_rel_err

DATA = Path(__file__).resolve().parents[2] / 'data' / 'official_dense'
# the small official models of the reference file, as mmeff configs; the table grid comes from
# img_size (V1/V2: 800 = the official detection resolution; EfficientViT: 7x7 in all stages)
CONFIGS = {
    'v1_det': dict(type='mmeff.EfficientFormer', img_size=800,
                   arch=dict(widths=[8, 16, 24, 32], depths=[1, 1, 1, 2], num_vit=1)),
    'v2_det': dict(type='mmeff.EfficientFormerV2', img_size=800, with_out_norms=False,
                   arch=dict(widths=(16, 16, 32, 32), depths=(1, 1, 2, 2), num_attn=1,
                             mlp_ratios=((4,), (4,), (4, 4), (4, 4)))),
    'evit_det': dict(type='mmeff.EfficientViT', img_size=448, out_indices=(0, 1, 2),
                     arch=dict(embed_dims=[16, 32, 48], depths=[1, 1, 1], num_heads=[2, 2, 2],
                               key_dim=4, kernels=[5, 3, 3, 3])),
}


@pytest.fixture(scope='module')
def references():
    return torch.load(DATA / 'official_dense_reference.pt', weights_only=True)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_features_equal_official_dense_backbone(name, references, tmp_path):
    ref = references[name]
    state = {k: v.float() if v.is_floating_point() else v for k, v in ref['state_dict'].items()}
    path = tmp_path / 'official_detector.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)  # an MMDet 2 file: backbone.* keys
    backbone = MODELS.build(CONFIGS[name]).eval()
    report = backbone.load_checkpoint(str(path))
    assert not (report.missing or report.unexpected or report.resized), report.summary()
    size, gen = ref['input_size'], torch.Generator().manual_seed(ref['input_seed'])
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, size, size, generator=gen))
    assert len(outs) == len(ref['feats'])
    for level, (out, expected) in enumerate(zip(outs, ref['feats'])):
        step = out.shape[-1] // expected.shape[-1] + (out.shape[-1] % expected.shape[-1] > 0)
        out = out[:, :, ::step, ::step]
        assert out.shape == expected.shape, level
        rel = norm_rel_err(out, expected)
        assert rel < 1e-5, f'{name} level {level}: relative error {rel:.2e}'
