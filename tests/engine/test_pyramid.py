"""The build-time pyramid check: configs whose backbone outputs cannot give what the FPN or the
heads were told stop before training with the fix in the message (tools exit 2)."""
import pytest

import mmeff  # noqa: F401  (registers the backbones)
from mmeff.engine import launch
from mmeff.engine.pyramid import PyramidMismatchError, check_pyramid

RETINA_STRIDES = [8, 16, 32, 64, 128]


def retinanet(backbone: dict, in_channels, start_level: int = 1) -> dict:
    """MMDet's RetinaNet R50-FPN model config, with the parts the check reads."""
    return dict(type='RetinaNet', backbone=backbone,
                neck=dict(type='FPN', in_channels=in_channels, out_channels=256,
                          start_level=start_level, add_extra_convs='on_input', num_outs=5),
                bbox_head=dict(type='RetinaHead', anchor_generator=dict(
                    type='AnchorGenerator', strides=RETINA_STRIDES)))


VIT = dict(type='mmeff.EfficientViT', arch='m4', out_indices=(0, 1, 2))
L1 = dict(type='mmeff.EfficientFormer', arch='l1')


def test_efficientvit_stride8_level_with_stock_start_level_is_refused():
    """The old docs recipe: extra_levels=(8,) + start_level=1 feeds the heads strides 16-256."""
    model = retinanet(dict(VIT, extra_levels=(8,)), [64, 128, 256, 384])
    with pytest.raises(PyramidMismatchError, match=r'strides \[16, 32, 64, 128, 256\].*'
                       r'assumes strides \[8, 16, 32, 64, 128\].*extra_levels=\(4, 8\)'):
        check_pyramid(model)
    check_pyramid(retinanet(dict(VIT, extra_levels=(4, 8)), [32, 64, 128, 256, 384]))


def test_fpn_skipping_an_output_with_a_norm_is_refused():
    """Stock out_indices=(0, 1, 2, 3) with RetinaNet's start_level=1: out_norm0 never gets a
    gradient (DDP fails); the message gives the three-output recipe."""
    with pytest.raises(PyramidMismatchError, match=r'out_indices=\(1, 2, 3\) with neck '
                       r'start_level=0 and in_channels=\[96, 224, 448\]'):
        check_pyramid(retinanet(dict(L1, out_indices=(0, 1, 2, 3)), [48, 96, 224, 448]))
    check_pyramid(retinanet(dict(L1, out_indices=(1, 2, 3)), [96, 224, 448], start_level=0))


def test_neck_in_channels_must_match_the_backbone():
    with pytest.raises(PyramidMismatchError, match=r'set neck.in_channels=\[96, 224, 448\]'):
        check_pyramid(retinanet(dict(L1, out_indices=(1, 2, 3)), [256, 512, 1024], 0))


def test_train_tool_exits_2_with_the_message(tmp_path, capsys):
    config = tmp_path / 'bad.py'
    config.write_text(
        "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['mmeff'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(_delete_=True, type='mmeff.EfficientViT', arch='m4',\n"
        "             out_indices=(0, 1, 2), extra_levels=(8,), init_cfg=None),\n"
        "             neck=dict(in_channels=[64, 128, 256, 384]))\n")
    with pytest.raises(SystemExit) as exit_info:
        launch.main('train', [str(config), '--work-dir', str(tmp_path / 'w')])
    assert exit_info.value.code == 2
    assert 'PyramidMismatchError' in capsys.readouterr().err
