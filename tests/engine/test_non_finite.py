"""NonFiniteCheckHook: a NaN/Inf input or loss stops training with the iteration and the file
named, before the optimizer step and with BatchNorm statistics intact (issue 15, deliverable 3);
a broken annotation file is named."""
import json

import pytest
import torch
from mmengine.registry import DATASETS, MODELS

from mmeff.engine import launch
from mmeff.engine.data_paths import BrokenDataError
from mmeff.engine.hooks import NonFiniteError, NonFiniteWeightsError


@MODELS.register_module(force=True)
class NonFiniteTestRegressor(MODELS.get('LaunchTestRegressor')):  # from conftest.py
    """The tiny regressor (with a BatchNorm when ``norm``), taking the batch's file names."""

    def __init__(self, norm: bool = True, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.fc = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8) if norm else torch.nn.Identity(),
            torch.nn.ReLU(), torch.nn.Linear(8, 1))

    def forward(self, x, y, mode='loss', img_path=None):
        return super().forward(x, y, mode)


@DATASETS.register_module(force=True)
class NonFiniteTestData(torch.utils.data.Dataset):
    """The tiny regression samples, named ``sample_<i>.bin``; sample ``bad`` gets input
    ``value``."""

    def __init__(self, n: int = 8, bad: int = 5, value: float = float('nan'),
                 ann_file: str = ''):
        if ann_file:  # read like a dataset reads its annotations
            with open(ann_file) as f:
                json.load(f)
        self.data = DATASETS.get('LaunchTestData')(n=n)
        self.bad, self.value = bad, value

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.data[i], img_path=f'sample_{i}.bin')
        if i == self.bad:
            item['x'] = torch.full_like(item['x'], self.value)
        return item


def _options(**dataset) -> list:
    return ['model.type=NonFiniteTestRegressor', 'train_dataloader.dataset.type=NonFiniteTestData',
            'train_dataloader.sampler.shuffle=False', 'val_cfg=None', 'val_dataloader=None',
            'val_evaluator=None'] + [f'train_dataloader.dataset.{k}={v}'
                                     for k, v in dataset.items()]


def _norm_stats(model) -> torch.Tensor:
    bn = model.fc[1]
    return torch.cat([bn.running_mean, bn.running_var]).clone()


def test_nan_input_stops_before_the_forward(tiny, tiny_config, tmp_path, monkeypatch):
    """Sample 5 is NaN: batch 2 (samples 4-7, batch size 4) stops with its file named."""
    seen = {}
    original = launch.build_runner

    def keep_runner(cfg):
        seen['runner'] = original(cfg)
        return seen['runner']

    monkeypatch.setattr(launch, 'build_runner', keep_runner)
    with pytest.raises(NonFiniteError, match=r'input in batch samples \[1\] at iteration 2 '
                                             r'\(epoch 1\); files: sample_5\.bin'):
        launch.train(tiny.run_args(tiny_config, tmp_path / 'w', options=_options(bad=5)))
    model = seen['runner'].model
    assert torch.isfinite(_norm_stats(model)).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not model._forward_pre_hooks and not model._forward_hooks  # removed on the way out


def _keep_runner_and_snapshots(monkeypatch) -> dict:
    """Make launch.train's runner and the model state before each step available."""
    from mmengine.hooks import Hook
    seen = {}
    original = launch.build_runner

    class Snapshot(Hook):
        priority = 'LOWEST'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            seen['state'] = {k: v.clone() for k, v in runner.model.state_dict().items()}

    def keep_runner(cfg):
        seen['runner'] = original(cfg)
        seen['runner'].register_hook(Snapshot())
        return seen['runner']

    monkeypatch.setattr(launch, 'build_runner', keep_runner)
    return seen


@pytest.mark.parametrize('norm', [False, True], ids=['loss', 'norm-statistics'])
def test_overflow_stops_before_the_step_with_the_model_intact(tiny, tiny_config, tmp_path,
                                                              monkeypatch, norm):
    """A finite but huge input (1e30) overflows inside the forward: without a BatchNorm the
    loss is Inf; with one, the BN variance is Inf while the loss stays finite. Either way the
    run stops before the optimizer step, and weights and BN statistics are those before it."""
    seen = _keep_runner_and_snapshots(monkeypatch)
    what = r"loss \['loss'\]" if not norm else r"running statistics in norm layers \['fc.1'\]"
    with pytest.raises(NonFiniteError, match=what + r'.* at iteration 2 .*files: '
                                                  r'sample_4\.bin, .*sample_7\.bin'):
        launch.train(tiny.run_args(tiny_config, tmp_path / 'w', options=_options(
            bad=5, value=1e30) + [f'model.norm={norm}']))
    state = seen['runner'].model.state_dict()
    assert all(torch.equal(state[k], seen['state'][k]) for k in state)


def test_the_check_is_an_option(tiny, tiny_config, tmp_path):
    cfg = launch.build_train_config(tiny.run_args(tiny_config, tmp_path / 'w'))
    assert dict(type='mmeff.NonFiniteCheckHook') in cfg.custom_hooks
    cfg = launch.build_train_config(tiny.run_args(tiny_config, tmp_path / 'w',
                                                  options=['non_finite_check=False']))
    assert not any('NonFinite' in h['type'] for h in cfg.custom_hooks)


def test_broken_annotation_json_is_named(tiny, tiny_config, tmp_path, capsys):
    ann = tmp_path / 'instances.json'
    ann.write_text('{"images": [{"id": 1, "file_')  # truncated download
    argv = tiny.run_args(tiny_config, tmp_path / 'w', options=_options(ann_file=str(ann)))
    with pytest.raises(BrokenDataError, match='train_dataloader.dataset.ann_file -> '
                                              + str(ann)):
        launch.train(argv)
    with pytest.raises(SystemExit) as info:
        launch.main('train', argv)
    assert info.value.code == 2 and 'not valid JSON' in capsys.readouterr().err


def test_a_diverged_model_is_never_saved(tiny, tiny_config, tmp_path):
    """With the check off, a NaN sample turns the weights into NaN; the checkpoint hook then
    refuses to write the checkpoint that a resumed run would train on."""
    work_dir = tmp_path / 'w'
    with pytest.raises(NonFiniteWeightsError,
                       match='not saving a checkpoint after iteration 6: 8 weight tensors'):
        launch.train(tiny.run_args(tiny_config, work_dir,
                                   options=_options(bad=5) + ['non_finite_check=False']))
    assert not list(work_dir.glob('*.pth'))
