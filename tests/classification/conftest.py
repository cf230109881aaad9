"""Shared pieces of the classification tests: small stand-in networks and a timm teacher file."""
from pathlib import Path
from typing import Tuple

import pytest
import timm
import torch
from torch import nn

CONFIGS_CLS = Path(__file__).resolve().parents[2] / 'configs' / 'cls'


class StandInBackbone(nn.Module):
    """Two conv-BN stages returning a tuple of maps, like an mmeff backbone."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width))
        self.ls = nn.Parameter(torch.ones(2 * width))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (self.stage(self.stem(x)) * self.ls[:, None, None],)


class StandInHead(nn.Module):
    """The family-head interface: (cls, dist) in training with distillation, mean in eval."""

    def __init__(self, in_channels: int, num_classes: int = 1000, distillation: bool = True):
        super().__init__()
        self.num_classes, self.distillation = num_classes, distillation
        self.head = nn.Linear(in_channels, num_classes)
        self.head_dist = nn.Linear(in_channels, num_classes) if distillation else None

    def forward(self, x: torch.Tensor):
        x = x.mean((2, 3))
        if self.head_dist is None:
            return self.head(x)
        cls, dist = self.head(x), self.head_dist(x)
        return (cls, dist) if self.training else (cls + dist) / 2


@pytest.fixture
def stand_ins():
    def make(num_classes: int = 4, distillation: bool = False):
        return StandInBackbone(), StandInHead(16, num_classes, distillation)
    return make


@pytest.fixture(scope='session')
def teacher_file(tmp_path_factory) -> str:
    """A randomly initialised timm 'test_resnet' with 4 classes, saved as DeiT saves teachers."""
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', pretrained=False, num_classes=4)
    path = tmp_path_factory.mktemp('teacher') / 'test_resnet.pth'
    torch.save({'model': model.state_dict()}, path)
    return str(path)


# ------------------------------------------------------------------ end-to-end toy pretraining
TOY_VARIANT = 'efficientformer_l1_in1k.py'
TOY_IMG = 64
TOY_EPOCHS = 8


@pytest.fixture(scope='module')
def one_thread():
    """On the shared 2-core machines two OpenMP threads that wait for each other are many
    times slower than one (measured: 1.3-2 s vs 18-25 s per V2-S0 step under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='session')
def toy_imagenet(tmp_path_factory) -> dict:
    from mmeff.datasets.toy_data import IMAGENET_CLASSES, make_imagenet
    root = tmp_path_factory.mktemp('toy') / 'imagenet'
    make_imagenet(root, num_train=250, num_val=100, size=(TOY_IMG, TOY_IMG), seed=0)
    return dict(root=str(root), num_classes=len(IMAGENET_CLASSES), num_train=250, num_val=100)


def toy_config(toy: dict, work_dir: str, teacher=None):
    """The real variant config, shrunk to the toy data: sizes and the schedule length change;
    augmentation, mixup/cutmix, random erasing, optimiser and no-decay rules stay."""
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIGS_CLS / TOY_VARIANT)
    cfg.work_dir = work_dir
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False)
        loader.dataset.update(data_root=toy['root'], img_size=TOY_IMG)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(type='mmeff.Accuracy', topk=(1,))
    cfg.data_preprocessor.mixup.num_classes = toy['num_classes']
    cfg.model.head.num_classes = toy['num_classes']
    cfg.model.teacher = teacher
    cfg.optim_wrapper.optimizer.lr = 2e-3  # for the toy batch of 32 (no 1024-batch scaling)
    cfg.auto_scale_lr.enable = False
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
             convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=TOY_EPOCHS,
             convert_to_iter_based=True)]
    cfg.train_cfg = dict(by_epoch=True, max_epochs=TOY_EPOCHS, val_interval=TOY_EPOCHS)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=TOY_EPOCHS)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=8)
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    return cfg


def toy_train(cfg) -> dict:
    """Run it as tools/train.py and tools/test.py do (``mmeff.engine.launch``): top-1 of the
    saved checkpoint on the val split, training seconds, the runner and the checkpoint."""
    import time
    from mmeff.engine.launch import test, train
    config = Path(cfg.work_dir) / 'toy_config.py'
    config.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(config))
    start = time.perf_counter()
    runner = train([str(config)])
    seconds = time.perf_counter() - start
    checkpoint = str(Path(cfg.work_dir) / f'epoch_{TOY_EPOCHS}.pth')
    metrics = test([str(config), checkpoint])
    return dict(top1=metrics['accuracy/top1'], seconds=seconds, runner=runner,
                checkpoint=checkpoint, config=str(config))


def toy_report(toy: dict, name: str, figures: dict) -> None:
    import json
    print(f'\n[toy ImageNet, {TOY_VARIANT}, {TOY_IMG}x{TOY_IMG}, {toy["num_classes"]} classes, '
          f'{toy["num_train"]} train / {toy["num_val"]} val, {TOY_EPOCHS} epochs, batch 32, '
          f'1 CPU thread] {name}: {json.dumps(figures)}')


@pytest.fixture(scope='session')
def toy_pretraining():
    """The helpers above, for the end-to-end test modules."""
    return dict(config=toy_config, train=toy_train, report=toy_report, epochs=TOY_EPOCHS,
                variant=TOY_VARIANT, img=TOY_IMG)

