"""ImageClassifier: loss formulas, teacher isolation, predictions, clear errors."""
import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from timm.loss import SoftTargetCrossEntropy

from mmeff.models.classifiers import ImageClassifier


def _model(stand_ins, teacher=None, **kwargs):
    backbone, head = stand_ins(num_classes=4, distillation=teacher is not None)
    pre = dict(type='mmeff.ClsDataPreprocessor', mean=[0.0], std=[1.0])
    return ImageClassifier(backbone, head, teacher=teacher, data_preprocessor=pre, **kwargs)


def test_hard_distillation_loss_matches_deit(stand_ins, teacher_file):
    torch.manual_seed(0)
    model = _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=teacher_file))
    model.train()
    x = torch.randn(4, 3, 32, 32)
    target = torch.softmax(torch.randn(4, 4), dim=1)  # mixup-style soft targets
    seen = []
    model.teacher.model.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    losses = model(x, {'gt_label': target.argmax(1), 'gt_score': target}, mode='loss')

    cls, dist = model.head(model.backbone(x)[-1])
    reference = timm.create_model('test_resnet', num_classes=4)
    reference.load_state_dict(torch.load(teacher_file)['model'])
    teacher_label = reference.eval()(x).argmax(1)
    assert torch.equal(seen[0], x)  # the teacher saw the (mixed) model input itself
    torch.testing.assert_close(losses['loss_cls'], 0.5 * SoftTargetCrossEntropy()(cls, target))
    torch.testing.assert_close(losses['loss_dist'], 0.5 * F.cross_entropy(dist, teacher_label))


def _sgd_step_deltas(model: ImageClassifier, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """One ``train_step`` (data preprocessor, ``parse_losses``, optimizer wrapper: the path the
    runner takes) with plain SGD at lr 1: each parameter moves by minus its gradient."""
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=1.0)))
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    log_vars = model.train_step({'inputs': x, 'data_samples': {'gt_label': labels}}, wrapper)
    log_vars = {k: float(v.detach()) for k, v in log_vars.items()}
    moved = {k: before[k] - p.detach() for k, p in model.named_parameters()}
    return dict(log_vars=log_vars, grads=moved)


def test_distilled_training_differs_from_plain_by_exactly_the_teacher_term(stand_ins,
                                                                            teacher_file):
    """Distilled against plain training from the same weights and batch. The step must move
    every student weight by ``(1 - alpha) * label gradient + alpha * gradient of CE(dist head,
    teacher argmax)``, computed here from an independently loaded teacher; the labels are chosen
    to disagree with the teacher everywhere, so a teacher ignored (its label replaced by the
    ground truth or by the student's own guess), a zero weight, a detached distillation output
    or a loss term the runner does not sum all move the weights differently."""
    torch.manual_seed(0)
    plain = _model(stand_ins).train()
    distilled = _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=teacher_file))
    missing = distilled.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ['head.head_dist.bias', 'head.head_dist.weight']
    x = torch.randn(8, 3, 32, 32)
    reference = timm.create_model('test_resnet', num_classes=4)
    reference.load_state_dict(torch.load(teacher_file)['model'])
    with torch.no_grad():
        teacher_label = reference.eval()(x).argmax(1)
    labels = (teacher_label + 1) % 4
    alpha = distilled.distillation_alpha

    # the reference gradient of the distillation term, on a copy of the distilled student
    twin = copy.deepcopy(distilled).train()
    with torch.no_grad():
        student_guess = twin.head(twin.backbone(x)[-1])[1].argmax(1)
    assert not torch.equal(student_guess, teacher_label)  # self-distillation would show
    _, dist_logits = twin.head(twin.backbone(x)[-1])
    g_dist = dict(zip([k for k, _ in twin.named_parameters()], torch.autograd.grad(
        F.cross_entropy(dist_logits, teacher_label), list(twin.parameters()),
        allow_unused=True)))

    without = _sgd_step_deltas(plain, x, labels)
    with_teacher = _sgd_step_deltas(distilled, x, labels)
    assert set(without['log_vars']) == {'loss', 'loss_cls'}
    assert set(with_teacher['log_vars']) == {'loss', 'loss_cls', 'loss_dist'}
    loss_dist = with_teacher['log_vars']['loss_dist']
    assert math.isfinite(loss_dist) and loss_dist > 0
    assert with_teacher['log_vars']['loss'] == pytest.approx(
        (1 - alpha) * without['log_vars']['loss_cls'] + loss_dist, rel=1e-5)

    grads = with_teacher['grads']
    for name, g_cls in without['grads'].items():  # backbone and class head
        extra = alpha * g_dist[name] if g_dist[name] is not None else 0 * g_cls
        torch.testing.assert_close(grads[name], (1 - alpha) * g_cls + extra, msg=name)
        if name.startswith('backbone.'):
            assert extra.abs().max() > 1e-3 * g_cls.abs().max(), name  # the teacher matters
    for name in ('head.head_dist.weight', 'head.head_dist.bias'):  # only the teacher trains it
        assert torch.isfinite(grads[name]).all() and grads[name].abs().max() > 0, name
        torch.testing.assert_close(grads[name], alpha * g_dist[name], msg=name)
    assert plain.head.head_dist is None  # a plain model has no distillation output to train


def test_without_teacher_plain_head_and_label_smoothing(stand_ins):
    model = _model(stand_ins, label_smoothing=0.1)
    assert model.head.head_dist is None
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    losses = model(x, {'gt_label': y}, mode='loss')
    assert set(losses) == {'loss_cls'}
    logits = model.head(model.backbone(x)[-1])
    torch.testing.assert_close(losses['loss_cls'], F.cross_entropy(logits, y, label_smoothing=0.1))


def test_teacher_is_frozen_and_outside_state_dict_optimizer_and_train(stand_ins, teacher_file):
    model = _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=teacher_file))
    teacher = model.teacher.model
    keys = list(model.state_dict())
    assert keys and all(k.startswith(('backbone.', 'head.')) for k in keys)
    assert any(k.startswith('head.head_dist.') for k in keys)
    own = {id(p) for p in model.parameters()}
    assert not own & {id(p) for p in teacher.parameters()}
    assert all(not p.requires_grad for p in teacher.parameters())

    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='AdamW', lr=1e-3)))
    in_optimizer = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert in_optimizer == own

    model.train()
    assert model.backbone.training and not teacher.training
    model.double()  # casts/moves follow the student
    assert next(teacher.parameters()).dtype == torch.float64
    ema_copy = copy.deepcopy(model)  # what EMAHook does: the frozen teacher is shared
    assert ema_copy.teacher is model.teacher
    assert ema_copy.backbone.stem[0].weight is not model.backbone.stem[0].weight


def test_predict_averages_heads_and_keeps_labels(stand_ins, teacher_file):
    model = _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=teacher_file)).eval()
    x = torch.randn(3, 3, 32, 32)
    preds = model(x, {'gt_label': torch.tensor([0, 1, 2])}, mode='predict')
    feat = model.backbone(x)[-1].mean((2, 3))
    expected = ((model.head.head(feat) + model.head.head_dist(feat)) / 2).softmax(1)
    assert [int(p.gt_label) for p in preds] == [0, 1, 2]
    torch.testing.assert_close(torch.stack([p.pred_score for p in preds]), expected)
    assert [int(p.pred_label) for p in preds] == expected.argmax(1).tolist()


def test_unknown_teacher_name_is_named_with_a_pointer_to_timm(stand_ins, teacher_file):
    with pytest.raises(ValueError, match=r"'regnety_16gf'.*timm\.list_models") as err:
        _model(stand_ins, teacher=dict(name='regnety_16gf', checkpoint=teacher_file))
    assert 'regnety_160' in str(err.value)  # the close match is suggested


def test_teacher_needs_a_matching_checkpoint(stand_ins, teacher_file, tmp_path):
    with pytest.raises(ValueError, match='needs checkpoint=<file, URL or timm: tag>'):
        _model(stand_ins, teacher=dict(name='test_resnet'))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=str(tmp_path / 'no.pth')))
    with pytest.raises(ValueError, match="does not match timm model 'test_vit'"):
        _model(stand_ins, teacher=dict(name='test_vit', checkpoint=teacher_file))


def test_teacher_and_head_must_agree(stand_ins, teacher_file):
    backbone, head = stand_ins(num_classes=4, distillation=False)
    with pytest.raises(ValueError, match='a teacher needs a head with a distillation output'):
        ImageClassifier(backbone, head, teacher=dict(name='test_resnet', checkpoint=teacher_file))
    backbone, head = stand_ins(num_classes=5, distillation=True)
    with pytest.raises(ValueError, match='predicts 4 classes but the head has 5'):
        ImageClassifier(backbone, head,
                        teacher=dict(name='test_resnet', checkpoint=teacher_file, num_classes=4))
    with pytest.raises(ValueError, match='distillation_alpha'):
        _model(stand_ins, distillation_alpha=1.5)


def test_distilled_checkpoint_evaluates_without_the_teacher_file(stand_ins, teacher_file):
    """head.distillation=True and no teacher: evaluation averages both heads like the trained
    model; training it is refused (nothing would supervise the distillation output)."""
    trained = _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=teacher_file)).eval()
    backbone, head = stand_ins(num_classes=4, distillation=True)
    evaluator = ImageClassifier(backbone, head)
    evaluator.load_state_dict(trained.state_dict())
    evaluator.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(evaluator(x), trained(x))
    evaluator.train()
    with pytest.raises(ValueError, match='no teacher to train it'):
        evaluator(x, {'gt_label': torch.tensor([0, 1])}, mode='loss')


def test_teacher_with_a_head_giving_one_output_in_training_is_named(stand_ins, teacher_file):
    model = _model(stand_ins, teacher=dict(name='test_resnet', checkpoint=teacher_file)).train()
    model.head.eval()  # answers the averaged logits only
    with pytest.raises(ValueError, match=r'with a teacher the head must return \(cls_logits, '
                                         r'dist_logits\) in training mode'):
        model(torch.randn(2, 3, 32, 32), {'gt_label': torch.tensor([0, 1])}, mode='loss')


def test_loss_without_labels_is_a_clear_error(stand_ins):
    with pytest.raises(ValueError, match=r"gt_label"):
        _model(stand_ins)(torch.randn(2, 3, 32, 32), None, mode='loss')


def test_teacher_from_safetensors_and_from_another_layout(tmp_path):
    """Plain .safetensors files load; a torchvision RegNet file goes through timm's own
    regnet filter function (the fallback for layouts timm converts itself)."""
    import torchvision
    from safetensors.torch import save_file
    from mmeff.models.classifiers import FrozenTeacher
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    source = timm.create_model('test_resnet', num_classes=4).eval()
    save_file(source.state_dict(), str(tmp_path / 'teacher.safetensors'))
    teacher = FrozenTeacher('test_resnet', str(tmp_path / 'teacher.safetensors'), num_classes=4)
    torch.testing.assert_close(teacher(x), source(x))

    tv = torchvision.models.regnet_y_400mf(num_classes=4).eval()
    assert any(k.startswith('trunk_output.') for k in tv.state_dict())
    torch.save({'model': tv.state_dict()}, tmp_path / 'tv_regnet.pth')
    teacher = FrozenTeacher('regnety_004', str(tmp_path / 'tv_regnet.pth'), num_classes=4)
    torch.testing.assert_close(teacher(x), tv(x))


def test_teacher_classes_follow_the_head_config(stand_ins, teacher_file):
    """Family heads need not expose num_classes: the head config says it (default 1000)."""
    backbone, _ = stand_ins()
    model = ImageClassifier(
        backbone, dict(type='mmeff.EfficientFormerClsHead', in_channels=16, num_classes=4),
        teacher=dict(name='test_resnet', checkpoint=teacher_file))
    assert model.num_classes == model.teacher.num_classes == 4
    assert model.head.head_dist is not None
