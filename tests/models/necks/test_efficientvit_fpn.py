"""Feeding EfficientViT's stride-16/32/64 maps to detectors: mmeff.EfficientViTFPN (the
official downstream design) and the backbone's stem levels with MMDet's own FPN, for RetinaNet
(P3-P7) and Mask R-CNN (P2-P6); a real MMDet RetinaNet built from MMDet's config trains a step
and predicts."""
import textwrap

import pytest
import torch

from mmeff.models.backbones import EfficientViT
from mmeff.models.necks import EfficientViTFPN


def conv_out(n: int, times: int) -> int:
    for _ in range(times):
        n = (n - 1) // 2 + 1
    return n


@pytest.fixture(scope='module')
def m0_feats():
    torch.manual_seed(0)
    backbone = EfficientViT('m0', extra_levels=(4, 8)).eval()
    with torch.no_grad():
        return {hw: backbone(torch.randn(1, 3, *hw)) for hw in [(256, 320), (225, 337)]}


def _sizes(outs):
    return [tuple(o.shape[-2:]) for o in outs]


def test_maskrcnn_layout_p2_to_p6(m0_feats):
    """Official Mask R-CNN neck: two transposed-conv levels, num_outs=5 -> strides 4..64."""
    neck = EfficientViTFPN([64, 128, 192], 48, num_outs=5, num_extra_trans_convs=2)
    neck.init_weights()
    outs = neck(m0_feats[(256, 320)][2:])
    assert _sizes(outs) == [(64, 80), (32, 40), (16, 20), (8, 10), (4, 5)]
    assert all(o.shape[:2] == (1, 48) for o in outs)
    # not a multiple of 64: transposed levels double the stride-16 map (15x22 -> 30x44, 60x88)
    outs = neck(m0_feats[(225, 337)][2:])
    assert _sizes(outs) == [(60, 88), (30, 44), (15, 22), (8, 11), (4, 6)]


def test_retinanet_layout_p3_to_p7(m0_feats):
    """Official RetinaNet neck: one transposed-conv level plus an 'on_input' stride-2 conv."""
    neck = EfficientViTFPN([64, 128, 192], 48, num_outs=5, num_extra_trans_convs=1,
                           add_extra_convs='on_input')
    assert neck.extra_convs[0].in_channels == 192
    outs = neck(m0_feats[(256, 320)][2:])
    assert _sizes(outs) == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


def test_coarser_levels_by_max_pool_or_chained_convs(m0_feats):
    feats = m0_feats[(256, 320)][2:]
    pooled = EfficientViTFPN([64, 128, 192], 16, num_outs=5)(feats)
    assert _sizes(pooled) == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    chained = EfficientViTFPN([64, 128, 192], 16, num_outs=5, add_extra_convs='on_output',
                              relu_before_extra_convs=True)
    assert [c.in_channels for c in chained.extra_convs] == [16, 16]
    assert _sizes(chained(feats)) == _sizes(pooled)


def test_init_weights_xavier_for_convs_kaiming_for_transposed():
    torch.manual_seed(0)
    neck = EfficientViTFPN([64, 128, 192], 256, num_outs=5, num_extra_trans_convs=2)
    before = neck.extra_trans_convs[0].weight.clone()
    neck.init_weights()
    torch.testing.assert_close(neck.extra_trans_convs[0].weight, before)  # left as built
    w = neck.fpn_convs[0].weight
    bound = (6 / (256 * 9 + 256 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # xavier-uniform range
    assert torch.all(neck.fpn_convs[0].bias == 0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_outs=3, num_extra_trans_convs=2), 'num_outs=3 is fewer than'),
    (dict(num_outs=5, add_extra_convs='on_nothing'), 'add_extra_convs must be'),
    (dict(num_outs=5, start_level=3), 'start_level=3 must index'),
])
def test_bad_neck_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EfficientViTFPN([64, 128, 192], 16, **kwargs)


def test_wrong_number_of_inputs_is_named(m0_feats):
    neck = EfficientViTFPN([64, 128, 192], 16, num_outs=5)
    with pytest.raises(ValueError, match="expects 3 inputs .* got 5; make the backbone's"):
        neck(m0_feats[(256, 320)])


# ------------------------------------------------------------------- with MMDet's own parts
def test_mmdet_fpn_on_stem_levels_gives_p2_p6_and_p3_p7(m0_feats):
    from mmdet.models.necks import FPN
    feats = m0_feats[(256, 320)]
    backbone = EfficientViT('m0', extra_levels=(4, 8))
    # MMDet's FPN asserts a list; out_channels is a tuple in every mmeff backbone
    p2_p6 = FPN(list(backbone.out_channels), 32, num_outs=5)(feats)
    assert _sizes(p2_p6) == [(64, 80), (32, 40), (16, 20), (8, 10), (4, 5)]
    p3_p7 = FPN(list(backbone.out_channels[1:]), 32, num_outs=5,
                add_extra_convs='on_input')(feats[1:])
    assert _sizes(p3_p7) == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]


def test_mmdet_retina_head_on_efficientvit_fpn(m0_feats):
    from mmdet.models.dense_heads import RetinaHead
    neck = EfficientViTFPN([64, 128, 192], 32, num_outs=5, num_extra_trans_convs=1,
                           add_extra_convs='on_input')
    head = RetinaHead(num_classes=3, in_channels=32, feat_channels=32, stacked_convs=1,
                      anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                            scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                            strides=[8, 16, 32, 64, 128]))
    cls_scores, bbox_preds = head(neck(m0_feats[(256, 320)][2:]))
    assert [tuple(c.shape) for c in cls_scores] == [
        (1, 27, 32, 40), (1, 27, 16, 20), (1, 27, 8, 10), (1, 27, 4, 5), (1, 27, 2, 3)]
    assert [b.shape[1] for b in bbox_preds] == [36] * 5


RETINANET_CFG = """
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    backbone=dict(_delete_=True, type='mmeff.EfficientViT', arch='m0', frozen_stages=0,
                  norm_eval=True),
    neck=dict(_delete_=True, type='mmeff.EfficientViTFPN', in_channels=[64, 128, 192],
              out_channels=64, num_outs=5, num_extra_trans_convs=1, add_extra_convs='on_input'),
    bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64, stacked_convs=1))
"""


@pytest.mark.slow
def test_mmdet_retinanet_from_mmdet_config_trains_a_step_and_predicts(tmp_path):
    from mmengine.registry import DefaultScope
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    before = DefaultScope.get_current_instance()
    with DefaultScope.overwrite_default_scope('mmdet'):
        _retinanet_train_step_and_predict(tmp_path)
    assert DefaultScope.get_current_instance() is before  # no global scope left behind


def _retinanet_train_step_and_predict(tmp_path):
    from mmengine.config import Config
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    path = tmp_path / 'retinanet_efficientvit_m0.py'
    path.write_text(textwrap.dedent(RETINANET_CFG))
    cfg = Config.fromfile(str(path))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.backbone).__name__ == 'EfficientViT'

    sample = DetDataSample(metainfo=dict(img_shape=(200, 260), ori_shape=(200, 260),
                                         scale_factor=(1.0, 1.0), pad_shape=(256, 320)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[20., 30., 120., 150.]]),
                                       labels=torch.tensor([1]))
    data = dict(inputs=[torch.randint(0, 255, (3, 200, 260), dtype=torch.uint8)],
                data_samples=[sample])
    model.train()
    batch = model.data_preprocessor(data, training=True)
    assert batch['inputs'].shape[-2:] == (256, 320)
    losses = model(**batch, mode='loss')
    total = sum(v if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)
    assert model.backbone.stages[0].blocks[0].mixer.attn.attention_bias.table.grad is not None
    assert all(p.grad is None for p in model.backbone.stem.parameters())  # frozen_stages=0

    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(data, training=False), mode='predict')
    assert len(results) == 1 and results[0].pred_instances.bboxes.shape[-1] == 4


def test_loads_the_official_retinanet_neck_names():
    """The official neck (mmcv ConvModules; RetinaNet's stride-2 conv on the input appended to
    ``fpn_convs``): ``lateral_convs.i.conv.*``, ``fpn_convs.0-3.conv.*``,
    ``extra_trans_convs.0.conv.*``, ``extra_fpn_convs.0.conv.*`` load into ours by position."""
    neck = EfficientViTFPN([128, 256, 384], 256, num_outs=5, num_extra_trans_convs=1,
                           add_extra_convs='on_input')
    ours = neck.state_dict()
    official = {}
    for key, value in ours.items():
        module, index, leaf = key.split('.')
        if module == 'extra_convs':  # the official fpn_convs after the 3 backbone levels
            module, index = 'fpn_convs', str(3 + int(index))
        official[f'{module}.{index}.conv.{leaf}'] = torch.randn_like(value)
    assert official['fpn_convs.3.conv.weight'].shape[1] == 384  # on the 384-channel input
    result = neck.load_state_dict(official, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(neck.extra_convs[0].weight, official['fpn_convs.3.conv.weight'])
    assert torch.equal(neck.lateral_convs[2].bias, official['lateral_convs.2.conv.bias'])
