"""ClsDataPreprocessor: normalisation always; random erasing and mixup only for training."""
import pytest
import torch

from mmeff.models.classifiers import ClsDataPreprocessor

MEAN, STD = [10.0, 20.0, 30.0], [2.0, 4.0, 5.0]


def _batch(n=4, size=16):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    return {'inputs': images, 'data_samples': {'gt_label': torch.arange(n) % 3}}


def _normalised(images):
    return (images.float() - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def test_eval_batches_are_only_normalised():
    pre = ClsDataPreprocessor(MEAN, STD, random_erasing=dict(probability=1.0, mode='pixel'),
                              mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3))
    batch = _batch()
    out = pre(dict(batch), training=False)
    torch.testing.assert_close(out['inputs'], _normalised(batch['inputs']))
    assert set(out['data_samples']) == {'gt_label'}


def test_pseudo_collated_samples_are_accepted():
    batch = _batch(2)
    batch['inputs'] = list(batch['inputs'])
    batch['data_samples'] = [{'gt_label': 2}, {'gt_label': 0}]
    out = ClsDataPreprocessor(MEAN, STD)(batch, training=False)
    assert out['data_samples']['gt_label'].tolist() == [2, 0]


def test_training_applies_random_erasing_and_mixup_to_soft_targets():
    torch.manual_seed(0)
    pre = ClsDataPreprocessor(MEAN, STD, random_erasing=dict(probability=1.0, mode='pixel'),
                              mixup=dict(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1,
                                         num_classes=3))
    batch = _batch()
    out = pre(dict(batch), training=True)
    assert not torch.allclose(out['inputs'], _normalised(batch['inputs']))
    score = out['data_samples']['gt_score']
    assert score.shape == (4, 3)
    torch.testing.assert_close(score.sum(1), torch.ones(4))
    assert (score > 0).all()  # label smoothing 0.1 spreads mass to every class
    assert out['data_samples']['gt_label'].tolist() == [0, 1, 2, 0]


def test_random_erasing_alone_keeps_hard_labels():
    pre = ClsDataPreprocessor(MEAN, STD, random_erasing=dict(probability=1.0, mode='const'))
    out = pre(_batch(), training=True)
    assert set(out['data_samples']) == {'gt_label'}
    assert (out['inputs'] == 0).flatten(1).any(1).all()  # every image has an erased block


def test_mixup_with_odd_batch_is_a_clear_error():
    pre = ClsDataPreprocessor(MEAN, STD, mixup=dict(mixup_alpha=0.8, num_classes=3))
    with pytest.raises(ValueError, match='even batch size, got 3.*drop_last=True'):
        pre(_batch(3), training=True)
