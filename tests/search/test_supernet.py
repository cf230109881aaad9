"""MetaPath / supernet behaviour: Gumbel-softmax mixing, gradients, identity, fixed subnets."""
import pytest
import torch

from mmeff.registry import MODELS
from mmeff.search.space import Subnet
from mmeff.search.supernet import EfficientFormerSupernet, MetaPath


def test_gradients_reach_architecture_logits():
    torch.manual_seed(0)
    mp = MetaPath(8, ('4d', '3d', 'id'), layer_scale_init=0.5, table_size=(4, 4)).train()
    x = torch.randn(2, 8, 4, 4)
    mp(x).pow(2).sum().backward()
    g = mp.arch_logits.grad
    assert g is not None and g.abs().sum() > 0
    assert mp.paths['4d'].mlp.fc1.conv.weight.grad.abs().sum() > 0
    assert mp.paths['3d'].block.token_mixer.qkv.weight.grad.abs().sum() > 0


def test_gumbel_sampling_is_stochastic_in_training_and_softmax_in_eval():
    torch.manual_seed(0)
    mp = MetaPath(8, ('4d', 'id'), layer_scale_init=0.5)
    with torch.no_grad():
        mp.arch_logits.copy_(torch.tensor([0.3, -0.3]))
    mp.train()
    w = torch.stack([mp.mixing_weights() for _ in range(200)])
    assert torch.allclose(w.sum(1), torch.ones(200))
    assert w[:, 0].std() > 0.05  # exploration
    mp.tau = 0.05  # low temperature: nearly one-hot samples
    w = torch.stack([mp.mixing_weights() for _ in range(200)])
    assert (w.max(1).values > 0.9).float().mean() > 0.8
    mp.eval()
    assert torch.allclose(mp.mixing_weights(), torch.tensor([0.3, -0.3]).softmax(0))
    assert mp.probabilities()['4d'] == pytest.approx(float(torch.tensor([0.6]).sigmoid()))


def test_identity_path_and_fixed_choice():
    mp = MetaPath(8, ('4d', '3d', 'id'), layer_scale_init=0.5, table_size=(4, 4)).eval()
    x = torch.randn(1, 8, 4, 4)
    mp.fixed = 'id'
    assert torch.equal(mp(x), x)
    with torch.no_grad():  # identity almost certain -> mixed output ~ input
        mp.arch_logits.copy_(torch.tensor([-30.0, -30.0, 30.0]))
    mp.fixed = None
    assert torch.allclose(mp(x), x, atol=1e-6)
    mp.fixed = '3d'
    y = mp(x)
    assert y.shape == x.shape and not torch.allclose(y, x)  # MB3D ran on tokens, back to map


def test_mb3d_path_equals_standalone_mb3d():
    mp = MetaPath(16, ('4d', '3d', 'id'), table_size=(3, 5)).eval()
    mp.fixed = '3d'
    x = torch.randn(2, 16, 3, 5)
    tokens = x.flatten(2).transpose(1, 2)
    ref = mp.paths['3d'].block(tokens, (3, 5)).transpose(1, 2).reshape(2, 16, 3, 5)
    assert torch.allclose(mp(x), ref)


def test_supernet_registry_subnet_fixing_and_width_masks():
    net = MODELS.build(dict(type='EfficientFormerSupernet', widths=(16, 32, 48, 64),
                            depths=(1, 2, 2, 2), img_size=64, layer_scale_init=0.5))
    assert isinstance(net, EfficientFormerSupernet)
    assert [mp.choices for mp in net.stages[1]] == [('4d', 'id')] * 2
    assert net.stages[3][0].choices == ('4d', '3d', 'id')
    x = torch.randn(1, 3, 64, 64)
    net.eval()
    sub = Subnet.create((16, 16, 32, 64), [['4d'], ['4d', 'id'], ['4d', '3d'], ['3d', '3d']])
    net.set_subnet(sub)
    outs = net(x)
    assert [o.shape[1] for o in outs] == [16, 32, 48, 64]
    assert outs[1][:, 16:].abs().max() == 0 and outs[2][:, 32:].abs().max() == 0
    assert outs[1][:, :16].abs().max() > 0
    assert net.stages[1][1].fixed == 'id' and net.stages[3][1].fixed == '3d'
    net.set_subnet(None)
    assert all(mp.fixed is None for mp in net.meta_paths()) and net.active_widths == net.widths
    with pytest.raises(ValueError, match='does not fit'):
        net.set_subnet(Subnet.create((16, 32, 48, 80), sub.blocks))
    with pytest.raises(ValueError, match='temperature'):
        net.set_tau(0)
