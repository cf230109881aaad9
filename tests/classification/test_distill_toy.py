"""End to end: hard distillation from a timm teacher trained here on the toy ImageNet tree.
Run with ``-s`` to see the figures."""
import time

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.runner import set_random_seed

import mmeff  # noqa: F401
from mmeff.checkpoint import read_state_dict
from mmeff.datasets.imagenet import ImageNet
from mmeff.models.classifiers import ClsDataPreprocessor


def train_timm_teacher(toy: dict, img: int, path, epochs: int = 10) -> float:
    """timm's small 'test_resnet' trained on the toy train split (hard labels, the same timm
    augmentation); saved as DeiT saves its teacher. Returns its val top-1."""
    set_random_seed(0)  # torch, numpy and random: timm's augmentation draws from all three
    model = timm.create_model('test_resnet', num_classes=toy['num_classes'])
    pre = ClsDataPreprocessor()
    train_set = ImageNet(data_root=toy['root'], split='train', img_size=img)
    val_set = ImageNet(data_root=toy['root'], split='val', img_size=img)
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
    batch = pre(torch.utils.data.default_collate([val_set[i] for i in range(len(val_set))]))
    with torch.no_grad():
        hits = model.eval()(batch['inputs']).argmax(1) == batch['data_samples']['gt_label']
    torch.save({'model': model.state_dict()}, path)
    return float(hits.float().mean() * 100)


@pytest.mark.slow
def test_distillation_from_a_timm_teacher(toy_imagenet, toy_pretraining, tmp_path, one_thread):
    chance = 100.0 / toy_imagenet['num_classes']
    start = time.perf_counter()
    teacher_top1 = train_timm_teacher(toy_imagenet, toy_pretraining['img'], tmp_path / 't.pth')
    teacher_seconds = time.perf_counter() - start
    teacher = dict(name='test_resnet', checkpoint=str(tmp_path / 't.pth'))
    cfg = toy_pretraining['config'](toy_imagenet, str(tmp_path / 'work'), teacher=teacher)
    result = toy_pretraining['train'](cfg)
    toy_pretraining['report'](toy_imagenet, 'hard distillation from timm test_resnet', dict(
        top1=round(result['top1'], 1), chance=chance, teacher_top1=round(teacher_top1, 1),
        teacher_train_seconds=round(teacher_seconds, 1),
        train_seconds=round(result['seconds'], 1)))
    assert teacher_top1 >= 2 * chance  # a teacher worth distilling from
    assert result['top1'] >= 2 * chance
    model = result['runner'].model
    assert model.with_teacher and not model.teacher.model.training
    state = read_state_dict(result['checkpoint'])
    assert any(k.startswith('head.head_dist.') for k in state)
    assert all(k.startswith(('backbone.', 'head.')) for k in state)  # the teacher is not saved
    # tools/test.py on the distilled checkpoint without the teacher file: same top-1
    from mmeff.engine.launch import test
    metrics = test([result['config'], result['checkpoint'], '--cfg-options', 'model.teacher=None',
                    'model.head.distillation=True'])
    assert metrics['accuracy/top1'] == result['top1']
