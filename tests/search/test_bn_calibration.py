"""BatchNorm recalibration of a subnet: the norms it runs get exactly the batch statistics of
the calibration batches; the supernet's other per-width norms and modules are left alone."""
import torch

from mmeff.search.bn_calibration import bn_recalibrated, recalibrate_bn
from mmeff.search.slimmable import SwitchableBatchNorm2d

from .test_v2_supernet import supernet


def stem_norms(net):
    """(active BatchNorm, an inactive one) of the first switchable norm."""
    switch = next(m for m in net.modules() if isinstance(m, SwitchableBatchNorm2d))
    other = next(k for k in switch if k != switch.active)
    return switch.current(), switch[other]


def test_recalibrated_statistics_are_the_batch_statistics():
    torch.manual_seed(0)
    net = supernet(drop_path_rate=0.2)
    net.set_min()
    for m in net.modules():  # stale statistics, as after sandwich training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(7.0)
    active, inactive = stem_norms(net)
    seen = []
    hook = active.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    batches = [torch.randn(4, 3, 64, 64) * 2 + 1, torch.randn(4, 3, 64, 64)]
    with bn_recalibrated(net, batches):
        mean, var = active.running_mean.clone(), active.running_var.clone()
    assert float(active.running_mean[0]) == 3.0  # restored after the body
    touched = recalibrate_bn(net, batches)
    hook.remove()
    assert len(seen) == 4  # two batches, twice
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in seen[2:]]).mean(0)
    expected_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in seen[2:]]).mean(0)
    for got_mean, got_var in ((mean, var), (active.running_mean, active.running_var)):
        torch.testing.assert_close(got_mean, expected_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_var, expected_var, atol=1e-5, rtol=1e-5)
    assert active in touched and inactive not in touched
    assert float(inactive.running_mean.min()) == float(inactive.running_mean.max()) == 3.0
    assert active.momentum == 0.1 and not net.training and not active.training
