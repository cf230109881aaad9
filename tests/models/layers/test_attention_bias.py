import itertools

import pytest
import torch
import torch.nn.functional as F

from mmeff.models.layers import AttentionBias2d, relative_offset_index


def reference_index(q_hw, k_hw, stride=1):
    """Independent (slow) construction of the LeViT-style absolute-offset index."""
    qs = list(itertools.product(range(q_hw[0]), range(q_hw[1])))
    ks = list(itertools.product(range(k_hw[0]), range(k_hw[1])))
    return torch.tensor([[abs(q[0] * stride - k[0]) * k_hw[1] + abs(q[1] * stride - k[1])
                          for k in ks] for q in qs])


@pytest.fixture
def bias():
    torch.manual_seed(0)
    m = AttentionBias2d(num_heads=4, table_size=(7, 7))
    torch.nn.init.normal_(m.table)
    return m


def test_exact_on_pretraining_grid(bias):
    out = bias((7, 7))
    assert out.shape == (4, 49, 49)
    assert torch.equal(out, bias.table[:, reference_index((7, 7), (7, 7))])


def test_index_matches_reference_for_strided_non_square_queries():
    got = relative_offset_index((3, 4), (5, 7), query_stride=2)
    assert torch.equal(got, reference_index((3, 4), (5, 7), stride=2))


def test_other_grid_resizes_offset_table_not_nxn_matrix(bias):
    out = bias((5, 9))
    table = F.interpolate(bias.table.detach().reshape(1, 4, 7, 7), size=(5, 9), mode='bicubic',
                          align_corners=False).reshape(4, 45)
    assert out.shape == (4, 45, 45)
    torch.testing.assert_close(out, table[:, reference_index((5, 9), (5, 9))])
    # the bias is a function of the offset only: (0,0)->(1,2) equals (3,4)->(4,6)
    assert out[0, 0 * 9 + 0, 1 * 9 + 2] == out[0, 3 * 9 + 4, 4 * 9 + 6]


@torch.no_grad()
def test_eval_cache_hits_and_invalidates(bias):
    bias.eval()
    a = bias((12, 20))
    assert bias((12, 20)) is a  # cached
    bias.table.add_(1.0)  # optimizer step / in-place change bumps the version
    b = bias((12, 20))
    assert b is not a and torch.allclose(b, a + 1.0, atol=1e-5)
    assert len(bias._bias_cache) == 1  # the stale entry was replaced, not kept beside
    bias.load_state_dict({'table': torch.zeros(4, 49)})
    assert bias((12, 20)).abs().max() == 0
    bias.double()
    assert bias((12, 20)).dtype == torch.float64


def test_eval_with_grad_enabled_propagates_gradient(bias):
    """Eval mode is not 'no gradient': a cached (detached) bias would give the table none."""
    bias.eval()
    bias((9, 9)).sum().backward()
    bias((9, 9)).sum().backward()
    assert bias.table.grad is not None and bias.table.grad.abs().sum() > 0


def test_training_mode_propagates_gradient(bias):
    bias.train()
    bias((9, 9)).sum().backward()
    assert bias.table.grad is not None and bias.table.grad.abs().sum() > 0


def test_loading_other_size_table_resizes(bias):
    big = torch.randn(4, 14 * 14)
    bias.load_state_dict({'table': big})
    expected = F.interpolate(big.reshape(1, 4, 14, 14), size=(7, 7), mode='bicubic',
                             align_corners=False).reshape(4, 49)
    torch.testing.assert_close(bias.table.detach(), expected)


def test_freeze_returns_constant(bias):
    bias.freeze((7, 7))
    frozen = bias((7, 7))
    with torch.no_grad():
        bias.table.zero_()
    assert torch.equal(bias((7, 7)), frozen)  # constant for export
    assert bias((6, 6)).abs().max() == 0  # other grids still computed
