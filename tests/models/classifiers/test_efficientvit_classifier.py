"""EfficientViT classifier: official parameter counts, logits equal to timm's efficientvit_m*
with transferred weights (timm layout and official-release layout), head behaviour."""
import re

import pytest
import timm
import torch
from torch import nn

from mmeff.checkpoint import load_pretrained
from mmeff.models.backbones.efficientvit.checkpoint import EfficientViTConverter
from mmeff.deploy import fuse
from mmeff.models.classifiers import efficientvit_classifier
from mmeff.models.heads import EfficientViTClsHead
from mmeff.testing import efficientvit_official_layout, max_rel_err, randomize_

ARCHS = ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']
OFFICIAL_PARAMS = dict(m0=2_349_436, m1=2_980_560, m2=4_187_554, m3=6_900_722, m4=8_804_228,
                       m5=12_473_772)


def randomized_timm(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_(timm.create_model(f'efficientvit_{arch}', pretrained=False), seed).eval()


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_count_equals_official(arch):
    model = efficientvit_classifier(arch)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[arch]


@pytest.mark.parametrize('arch', ARCHS)
def test_logits_match_timm_from_timm_and_official_layouts(arch, tmp_path):
    ref = randomized_timm(arch, seed=ARCHS.index(arch))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)

    ours = efficientvit_classifier(arch).eval()
    report = load_pretrained(ours, ref.state_dict(), EfficientViTConverter(), prefix='',
                             arch_name=arch)
    assert report.layout == 'timm' and not report.missing and not report.unexpected
    with torch.no_grad():
        got = ours(x)
    assert max_rel_err(got, expected) < 1e-5

    official = efficientvit_official_layout(ref.state_dict())
    # the official loader reshapes matrices to 1x1 convs: some release weights are 2-D
    for key in [k for k in official if re.search(r'(pw1|qkvs\.0)\.c\.weight$', k)][:4]:
        official[key] = official[key].flatten(1)
    path = tmp_path / f'efficientvit_{arch}.pth'
    torch.save({'model': official, 'epoch': 299}, path)
    fresh = efficientvit_classifier(arch).eval()
    report = load_pretrained(fresh, str(path), EfficientViTConverter(), prefix='', arch_name=arch)
    assert report.layout == 'official' and not report.missing and not report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), got, rtol=0, atol=0)


def test_distillation_head_train_tuple_eval_average_and_fuse():
    torch.manual_seed(0)
    head = EfficientViTClsHead(64, num_classes=10, distillation=True)
    feats = torch.randn(4, 64, 3, 3)
    head.train()
    cls, dist = head(feats)
    assert cls.shape == dist.shape == (4, 10)
    head.eval()
    torch.testing.assert_close(head(feats), (head.head(feats.mean((2, 3)))
                                             + head.head_dist(feats.mean((2, 3)))) / 2)
    expected = head(feats)
    deployed = fuse(head)  # replaces the BNLinears, then the head itself is not replaced
    assert not any(isinstance(m, nn.BatchNorm1d) for m in deployed.modules())
    torch.testing.assert_close(deployed(feats), expected, rtol=1e-5, atol=1e-6)


def test_fused_head_is_one_linear():
    torch.manual_seed(0)
    model = efficientvit_classifier('m0', num_classes=7, distillation=True).eval()
    x = torch.randn(1, 3, 96, 96)
    expected = model(x)
    fuse(model)
    assert isinstance(model.head.linear, nn.Linear)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_classifier_argument_errors():
    with pytest.raises(ValueError, match='out_indices is fixed'):
        efficientvit_classifier('m0', out_indices=(0,))
    with pytest.raises(ValueError, match='num_classes must be a positive int'):
        efficientvit_classifier('m0', num_classes=0)
