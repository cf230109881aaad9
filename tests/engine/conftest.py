"""A tiny mmengine regression task for the engine tests, independent of mmeff's backbones.

Everything is registered in mmengine's root registries under ``LaunchTest*`` names; a config
with ``default_scope='mmeff'`` finds them through the parent registry, as it would any mmengine
type. Checkpoints of this task hold what real ones hold besides weights (optimizer and scheduler
state, a message hub with numpy-backed ``HistoryBuffer``s), which is what torch's weights_only
loading trips over.
"""
import uuid
from collections import defaultdict
from types import SimpleNamespace
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS, RUNNERS
from mmengine.runner import Runner
from torch.utils.data import Dataset

#: work_dir -> epochs whose training started in that work dir (across runs)
EPOCHS_STARTED: Dict[str, List[int]] = defaultdict(list)


class SimulatedKill(RuntimeError):
    """Stands for the process dying between two epochs."""


@MODELS.register_module(force=True)
class LaunchTestRegressor(BaseModel):
    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.fc = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    def forward(self, x, y, mode='loss'):
        pred = self.fc(x)
        if mode == 'loss':
            return {'loss': ((pred - y) ** 2).mean()}
        return [dict(pred=p.item(), target=t.item()) for p, t in zip(pred[:, 0], y[:, 0])]


@DATASETS.register_module(force=True)
class LaunchTestData(Dataset):
    def __init__(self, n: int = 24, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return dict(x=self.x[i], y=self.y[i])


@METRICS.register_module(force=True)
class LaunchTestMSE(BaseMetric):
    def process(self, data_batch, data_samples) -> None:
        self.results.extend((s['pred'] - s['target']) ** 2 for s in data_samples)

    def compute_metrics(self, results) -> dict:
        return dict(mse=sum(results) / len(results))


@HOOKS.register_module(force=True)
class LaunchTestEpochRecorder(Hook):
    def before_train_epoch(self, runner) -> None:
        EPOCHS_STARTED[str(Path(runner.work_dir).resolve())].append(runner.epoch)


@HOOKS.register_module(force=True)
class LaunchTestKill(Hook):
    """Raises SimulatedKill when epoch ``at_epoch`` (0-based) is about to start; -1: never."""

    def __init__(self, at_epoch: int = -1):
        self.at_epoch = at_epoch

    def before_train_epoch(self, runner) -> None:
        if runner.epoch == self.at_epoch:
            raise SimulatedKill(f'killed before epoch {self.at_epoch}')


@RUNNERS.register_module(force=True)
class LaunchTestRunner(Runner):
    pass


TINY_CONFIG = """
default_scope = 'mmeff'
model = dict(type='LaunchTestRegressor')
train_dataloader = dict(dataset=dict(type='LaunchTestData', n=24), batch_size=4, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        collate_fn=dict(type='default_collate'))
val_dataloader = dict(dataset=dict(type='LaunchTestData', n=8, seed=1), batch_size=4,
                      num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                      collate_fn=dict(type='default_collate'))
test_dataloader = val_dataloader
val_evaluator = dict(type='LaunchTestMSE')
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9))
param_scheduler = [dict(type='MultiStepLR', milestones=[1], by_epoch=True, gamma=0.5)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1),
                     logger=dict(type='LoggerHook', interval=100))
custom_hooks = [dict(type='LaunchTestEpochRecorder'), dict(type='LaunchTestKill', at_epoch=-1)]
randomness = dict(seed=0)
log_level = 'WARNING'
"""


@pytest.fixture
def tiny_config(tmp_path) -> str:
    path = tmp_path / 'tiny_regression.py'
    path.write_text(TINY_CONFIG)
    return str(path)


def run_args(config: str, work_dir, *extra: str, options: List[str] = ()) -> List[str]:
    """tools/train.py-style argv; a unique experiment name keeps mmengine's per-name global
    instances (logger, message hub, visualizer) of consecutive runs apart."""
    return [config, '--work-dir', str(work_dir), *extra, '--cfg-options',
            f'experiment_name=t{uuid.uuid4().hex}', *options]


def weights(runner) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


@pytest.fixture
def tiny() -> SimpleNamespace:
    """The helpers above, for test modules (importlib import mode: no `import conftest`)."""
    return SimpleNamespace(EPOCHS_STARTED=EPOCHS_STARTED, SimulatedKill=SimulatedKill,
                           Runner=LaunchTestRunner, Data=LaunchTestData, run_args=run_args,
                           weights=weights)
