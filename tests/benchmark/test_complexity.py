"""MAC and parameter counting: the attention handles, and agreement with the papers."""
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from mmeff.benchmark.runner import complexity_of
from mmeff.benchmark.complexity import count_macs, count_params
from mmeff.models.zoo import build_classifier, variants

pytestmark = pytest.mark.usefixtures('one_thread')


class _Attention(nn.Module):
    """q @ k^T with heads broadcast over a shared key, then A @ v."""

    def __init__(self, fused: bool):
        super().__init__()
        self.fused = fused
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        q = self.proj(x).reshape(2, 4, 49, 4)          # (B, heads, N, d)
        if self.fused:
            return F.scaled_dot_product_attention(q, q, q[..., :2])
        k = q.mean(1)                                  # (B, N, d): broadcast over heads
        attn = q @ k[:, None].transpose(-2, -1)
        return attn.softmax(-1) @ q[..., :2]


def test_matmul_counts_broadcast_heads():
    counted = count_macs(_Attention(fused=False), (2, 49, 16))
    n, heads, d, dv = 49, 4, 4, 2
    assert counted.by_operator['matmul'] == 2 * heads * n * n * (d + dv)
    assert counted.by_operator['linear'] == 2 * 49 * 16 * 16


def test_sdpa_counts_both_products():
    counted = count_macs(_Attention(fused=True), (2, 49, 16))
    assert counted.by_operator['scaled_dot_product_attention'] == 2 * 4 * 49 * 49 * (4 + 2)


def test_norms_not_counted_unless_asked():
    model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8))
    plain = count_macs(model, (1, 3, 4, 4))
    assert plain.macs == 3 * 8 * 16 and set(plain.by_operator) == {'conv'}
    assert count_macs(model, (1, 3, 4, 4), count_norms=True).macs > plain.macs
    assert count_params(model) == 3 * 8 + 2 * 8


@pytest.mark.parametrize('name, paper_gmacs', [('resnet50', 4.1), ('mobilenetv2_100', 0.3),
                                                ('efficientnet_b0', 0.4)])
def test_reference_cnns_match_published_macs(name, paper_gmacs):
    counted = count_macs(timm.create_model(name), (1, 3, 224, 224))
    assert abs(counted.gmacs - paper_gmacs) / paper_gmacs < 0.05


@pytest.mark.slow
@pytest.mark.parametrize('variant', variants(), ids=lambda v: v.name)
def test_paper_macs_and_params_within_5_percent(variant):
    """All 13 variants at 224x224 (attention matmuls included, norms not counted)."""
    model = build_classifier(variant.name)
    params_m, gmacs = complexity_of(model, (1, 3, 224, 224))
    assert abs(gmacs - variant.paper_gmacs) / variant.paper_gmacs < 0.05, gmacs
    assert abs(params_m - variant.paper_params_m) / variant.paper_params_m < 0.05, params_m


@pytest.mark.parametrize('name', ['efficientformer_l1', 'efficientformerv2_s0',
                                  'efficientvit_m0'])
def test_counts_equal_timm_counts(name):
    """Same architecture, same count: ours vs timm's implementation of the variant."""
    ours = complexity_of(build_classifier(name), (1, 3, 224, 224))
    theirs = count_macs(timm.create_model(name), (1, 3, 224, 224))
    assert ours[0] * 1e6 == pytest.approx(count_params(timm.create_model(name)), rel=1e-6)
    assert ours[1] == pytest.approx(theirs.gmacs, rel=0.01)


def test_counting_leaves_the_model_untouched():
    model = build_classifier('efficientvit_m0')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    complexity_of(model, (1, 3, 224, 224))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
