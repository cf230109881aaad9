"""End to end on a toy ImageNet tree: pretrain with the real config (with and without a timm
teacher), then initialise a Mask R-CNN backbone from the checkpoint.

The figures (top-1, chance, seconds) are printed; run with ``-s`` to see them. Torch runs on one
thread here: on the shared 2-core machines two OpenMP threads that wait for each other are
many times slower than one.
"""
import json
import time
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import Runner

import mmeff  # noqa: F401
from mmeff.checkpoint import read_state_dict
from mmeff.datasets.imagenet import ImageNet
from mmeff.datasets.toy_data import IMAGENET_CLASSES, make_imagenet
from mmeff.models.classifiers import ClsDataPreprocessor

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'cls'
VARIANT = 'efficientformer_v2_s0_in1k.py'
NUM_CLASSES = len(IMAGENET_CLASSES)
CHANCE = 100.0 / NUM_CLASSES
IMG = 64
EPOCHS = 8


@pytest.fixture(scope='module')
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('toy') / 'imagenet'
    make_imagenet(root, num_train=250, num_val=50, size=(IMG, IMG), seed=0)
    return str(root)


def toy_config(data_root: str, work_dir: str, teacher=None) -> Config:
    """The real variant config, shrunk to the toy data: only sizes and the schedule length
    change; augmentation, mixup/cutmix, random erasing, optimiser and no-decay rules stay."""
    cfg = Config.fromfile(CONFIGS / VARIANT)
    cfg.work_dir = work_dir
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(batch_size=32, num_workers=0, persistent_workers=False, pin_memory=False)
        loader.dataset.update(data_root=data_root, img_size=IMG)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(type='mmeff.Accuracy', topk=(1,))
    cfg.data_preprocessor.mixup.num_classes = NUM_CLASSES
    cfg.model.head.num_classes = NUM_CLASSES
    cfg.model.teacher = teacher
    cfg.optim_wrapper.optimizer.lr = 2e-3  # for the toy batch of 32 (no 1024-batch scaling)
    cfg.auto_scale_lr.enable = False
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
             convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=EPOCHS,
             convert_to_iter_based=True)]
    cfg.train_cfg = dict(by_epoch=True, max_epochs=EPOCHS, val_interval=EPOCHS)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=EPOCHS)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=8)
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    return cfg


def train(cfg: Config) -> dict:
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.train()
    seconds = time.perf_counter() - start
    top1 = runner.val()['accuracy/top1']
    return dict(top1=top1, seconds=seconds, runner=runner,
                checkpoint=str(Path(cfg.work_dir) / f'epoch_{EPOCHS}.pth'))


@pytest.fixture(scope='module')
def pretrained(toy_root, tmp_path_factory, one_thread) -> dict:
    return train(toy_config(toy_root, str(tmp_path_factory.mktemp('work_plain'))))


def train_timm_teacher(data_root: str, path: Path, epochs: int = 6) -> float:
    """A small timm model trained on the toy train split (hard labels); returns val top-1."""
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=NUM_CLASSES)
    pre = ClsDataPreprocessor()
    train_set = ImageNet(data_root=data_root, split='train', img_size=IMG)
    val_set = ImageNet(data_root=data_root, split='val', img_size=IMG)
    loader = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    model.train()
    for _ in range(epochs):
        for batch in loader:
            data = pre(batch, training=True)
            loss = F.cross_entropy(model(data['inputs']), data['data_samples']['gt_label'])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    batch = pre(torch.utils.data.default_collate([val_set[i] for i in range(len(val_set))]))
    with torch.no_grad():
        correct = (model(batch['inputs']).argmax(1) == batch['data_samples']['gt_label'])
    torch.save({'model': model.state_dict()}, path)
    return float(correct.float().mean() * 100)


def _report(name: str, figures: dict) -> None:
    print(f'\n[toy ImageNet, {VARIANT}, {IMG}x{IMG}, {NUM_CLASSES} classes, 250 train / 50 val, '
          f'{EPOCHS} epochs, 1 CPU thread] {name}: ' + json.dumps(figures))


@pytest.mark.slow
def test_pretraining_reaches_well_above_chance(pretrained):
    _report('no teacher', dict(top1=pretrained['top1'], chance=CHANCE,
                                train_seconds=round(pretrained['seconds'], 1)))
    assert pretrained['top1'] >= 2 * CHANCE
    state = read_state_dict(pretrained['checkpoint'])
    assert state and all(k.startswith(('backbone.', 'head.')) for k in state)
    assert not any(k.startswith('head.head_dist') for k in state)


@pytest.mark.slow
def test_distillation_from_a_timm_teacher(toy_root, tmp_path_factory, one_thread):
    work = tmp_path_factory.mktemp('work_distill')
    start = time.perf_counter()
    teacher_top1 = train_timm_teacher(toy_root, work / 'teacher.pth')
    teacher_seconds = time.perf_counter() - start
    result = train(toy_config(toy_root, str(work),
                              teacher=dict(name='test_resnet', checkpoint=str(work / 'teacher.pth'))))
    _report('hard distillation', dict(top1=result['top1'], chance=CHANCE,
                                       teacher_top1=teacher_top1,
                                       teacher_train_seconds=round(teacher_seconds, 1),
                                       train_seconds=round(result['seconds'], 1)))
    assert teacher_top1 >= 2 * CHANCE  # the teacher knows something worth distilling
    assert result['top1'] >= 2 * CHANCE
    model = result['runner'].model
    assert model.with_teacher and not model.teacher.model.training
    state = read_state_dict(result['checkpoint'])
    assert any(k.startswith('head.head_dist.') for k in state)
    assert all(k.startswith(('backbone.', 'head.')) for k in state)  # teacher never saved


@pytest.mark.slow
def test_maskrcnn_backbone_initialised_from_the_pretrained_checkpoint(pretrained, tmp_path):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    checkpoint = pretrained['checkpoint']
    config = tmp_path / 'mask_rcnn_toy.py'
    config.write_text(f"""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='mmeff.EfficientFormerV2', arch='s0',
                  out_indices=(0, 1, 2, 3),
                  init_cfg=dict(type='Pretrained', checkpoint={checkpoint!r})),
    neck=dict(in_channels=[32, 48, 96, 176]))
""")
    cfg = Config.fromfile(str(config))
    detector = MMDET_MODELS.build(cfg.model)
    detector.init_weights()

    pretrained_backbone = {k[len('backbone.'):]: v for k, v in read_state_dict(checkpoint).items()
                           if k.startswith('backbone.')}
    dense = detector.backbone.state_dict()
    assert set(pretrained_backbone) <= set(dense)  # no pretrained backbone tensor left behind
    for key, value in pretrained_backbone.items():
        assert torch.equal(dense[key], value), key
    fresh = sorted(set(dense) - set(pretrained_backbone))
    assert fresh and all(k.startswith('out_norm') for k in fresh), fresh  # dense-only norms
    print(f'\n[Mask R-CNN] {len(pretrained_backbone)} backbone tensors equal the pretrained ones; '
          f'fresh dense-only: {sorted({k.split(".")[0] for k in fresh})}')
