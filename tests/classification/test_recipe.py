"""The pretraining recipe of configs/cls: no-decay rule, lr scaling, warm-up + cosine schedule."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from torch.nn.modules.batchnorm import _NormBase

import mmeff  # noqa: F401
from mmeff.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'cls'
NORMS = (_NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)


def _student(config: str, num_classes: int = 10):
    cfg = Config.fromfile(CONFIGS / config)
    cfg.model.teacher = None
    cfg.model.head.num_classes = num_classes
    return cfg, MODELS.build(cfg.model)


@pytest.mark.parametrize('config', ['efficientformer_l1_in1k.py', 'efficientformer_v2_s0_in1k.py',
                                    'efficientvit_m0_in1k.py'])
def test_weight_decay_skips_norms_biases_layer_scales_and_bias_tables(config):
    cfg, model = _student(config)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters()}
    base = cfg.optim_wrapper.optimizer.weight_decay
    seen = {'norm': 0, 'bias': 0, 'gamma': 0, 'table': 0, 'decayed': 0}
    for name, param in model.named_parameters():
        kind = ('norm' if id(param) in norm_params else
                next((k for k in ('bias', 'gamma', 'table') if name.endswith('.' + k)), 'decayed'))
        seen[kind] += 1
        expected = base if kind == 'decayed' else 0.0
        assert decay[id(param)] == expected, f'{name} ({kind}): wd {decay[id(param)]}'
        if kind == 'decayed':  # only conv/linear weights are decayed
            assert param.ndim >= 2, name
    assert len(decay) == len(list(model.parameters()))
    assert seen['norm'] and seen['bias'] and seen['decayed'] and seen['table'], seen
    if 'efficientvit' not in config:  # EfficientViT has no layer scale
        assert seen['gamma'], seen


def test_lr_is_scaled_to_the_total_batch(tmp_path):
    from mmengine.runner import Runner
    cfg = Config.fromfile(CONFIGS / 'efficientformer_v2_s0_in1k.py')
    assert cfg.auto_scale_lr == dict(base_batch_size=1024, enable=True)
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.train_dataloader.batch_size == 128
    cfg.model.teacher = None
    cfg.work_dir = str(tmp_path)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)  # builds the model only; no data is read here
    wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    runner.scale_lr(wrapper, runner.auto_scale_lr)  # what runner.train() does first
    # one process here: 1e-3 * 128 / 1024; on 8 GPUs 1e-3 * 1024 / 1024
    assert all(g['lr'] == pytest.approx(1e-3 * 128 / 1024)
               for g in wrapper.optimizer.param_groups)


def test_warmup_then_cosine_to_min_lr():
    cfg = Config.fromfile(CONFIGS / 'efficientformer_l1_in1k.py')
    assert cfg.train_cfg.max_epochs == 300
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    iters_per_epoch = 4
    schedulers = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(
        optimizer=optimizer, epoch_length=iters_per_epoch)) for s in cfg.param_scheduler]
    lrs = []
    for _ in range(300 * iters_per_epoch):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for s in schedulers:
            s.step()
    lrs.append(optimizer.param_groups[0]['lr'])
    warm = 5 * iters_per_epoch
    assert lrs[0] == pytest.approx(1e-6)
    steps = [b - a for a, b in zip(lrs[:warm - 1], lrs[1:warm])]
    assert all(d == pytest.approx(steps[0]) and d > 0 for d in steps)  # linear warm-up
    assert lrs[warm - 1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[warm - 1:], lrs[warm:]))  # then only down
    assert lrs[warm + (len(lrs) - warm) // 2] == pytest.approx((1e-3 + 1e-5) / 2, rel=0.02)
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-3)
