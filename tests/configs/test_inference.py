"""Inference on checkpoints the project writes: MMDet's init_detector / DetInferencer and MMSeg's
init_model / MMSegInferencer load tools/train.py's files with no wrapper (weights_only loading,
runner types allowed by ``import mmeff``); tools/infer.py draws predictions; tools/test.py --out
dumps them as MMDet's tools/test.py does.

One module-scoped fixture trains Mask R-CNN + EfficientFormer-L1 and Semantic FPN + L1 (the real
configs at toy size, 128 px) for one step each through tools/train.py's code path."""
import pickle
from pathlib import Path
from typing import Dict, Tuple

import mmcv
import numpy as np
import pytest
import torch

from mmeff.engine import infer, launch

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
TASKS = {'det': 'maskrcnn_l1_coco.py', 'seg': 'semfpn_l1_ade20k.py'}


@pytest.fixture(scope='module')
def trained(tmp_path_factory, toy_coco, toy_ade, write_overlay,
            train_api) -> Dict[str, Tuple[Path, Path, Path]]:
    """task -> (toy overlay config, checkpoint written by training, directory of val images)."""
    out = {}
    for task, name in TASKS.items():
        root = toy_coco if task == 'det' else toy_ade
        work = tmp_path_factory.mktemp(task)
        overlay = write_overlay(CONFIGS / name, work, root, size=128, num_val=2)
        by_epoch = task == 'det'  # the 1x COCO schedule counts epochs, the 40k ADE one iters
        train_api(overlay, work / 'work', {
            'model.backbone.init_cfg': None,
            'train_cfg.max_epochs' if by_epoch else 'train_cfg.max_iters': 1,
            'train_cfg.val_interval': 100,
            'default_hooks.checkpoint.interval': 1})
        ckpt = work / 'work' / ('epoch_1.pth' if by_epoch else 'iter_1.pth')
        images = root / 'val2017' if task == 'det' else root / 'images' / 'validation'
        out[task] = (overlay, ckpt, images)
    return out


def _saved_weights(ckpt: Path) -> Dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']


def _assert_loaded(model: torch.nn.Module, ckpt: Path) -> None:
    saved = _saved_weights(ckpt)
    own = model.state_dict()
    assert set(saved) == set(own)
    assert all(torch.equal(own[k], v) for k, v in saved.items())


def _first_image(images: Path) -> str:
    return str(sorted(images.iterdir())[0])


def test_detector_checkpoint_loads_in_mmdet_apis(trained):
    from mmdet.apis import inference_detector, init_detector
    overlay, ckpt, images = trained['det']
    model = init_detector(str(overlay), str(ckpt), device='cpu')
    _assert_loaded(model, ckpt)
    assert model.dataset_meta['classes']  # the class names travel in the checkpoint
    result = inference_detector(model, _first_image(images))
    assert result.pred_instances.bboxes.shape[1] == 4


def test_segmentor_checkpoint_loads_in_mmseg_apis(trained):
    from mmseg.apis import inference_model, init_model
    overlay, ckpt, images = trained['seg']
    model = init_model(str(overlay), str(ckpt), device='cpu')
    _assert_loaded(model, ckpt)
    image = _first_image(images)
    result = inference_model(model, image)
    assert tuple(result.pred_sem_seg.data.shape[-2:]) == mmcv.imread(image).shape[:2]


@pytest.mark.slow
@pytest.mark.parametrize('task', ['det', 'seg'])
def test_infer_tool_draws_predictions(trained, tmp_path, task):
    overlay, ckpt, images = trained[task]
    out = tmp_path / 'out'
    written = infer.infer([str(overlay), str(ckpt), str(images), '--out-dir', str(out),
                           '--score-thr', '0'])
    sources = sorted(images.iterdir())
    assert [Path(p).name for p in written] == [p.name for p in sources]
    for source, drawn in zip(sources, written):
        original, picture = mmcv.imread(str(source)), mmcv.imread(drawn)
        assert picture.shape == original.shape
        assert not np.array_equal(picture, original)  # something was drawn on it
    preds = out / ('preds' if task == 'det' else 'pred')
    assert len(list(preds.iterdir())) == len(sources)


def test_infer_tool_input_errors_exit_2(trained, tmp_path, capsys):
    overlay, ckpt, _ = trained['det']
    with pytest.raises(SystemExit) as done:
        infer.main([str(overlay), str(ckpt), str(tmp_path / 'nothing'), '--out-dir',
                    str(tmp_path)])
    assert done.value.code == 2
    assert str(tmp_path / 'nothing') in capsys.readouterr().err


@pytest.mark.slow
def test_test_tool_out_dumps_detections(trained, tmp_path):
    overlay, ckpt, _ = trained['det']
    dump = tmp_path / 'results.pkl'
    metrics = launch.test([str(overlay), str(ckpt), '--work-dir', str(tmp_path / 'w'),
                           '--out', str(dump)])
    assert 'coco/bbox_mAP' in metrics  # the config's metric still runs
    with open(dump, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2
    for result in results:
        instances = result['pred_instances']
        assert instances['bboxes'].shape[1] == 4
        assert len(instances['masks']) == len(instances['bboxes'])  # RLE-encoded masks
        assert isinstance(instances['masks'][0]['counts'], (str, bytes))


def test_test_tool_out_must_be_a_pickle(trained, tmp_path):
    overlay, ckpt, _ = trained['det']
    with pytest.raises(SystemExit) as done:
        launch.test([str(overlay), str(ckpt), '--out', str(tmp_path / 'results.json')])
    assert done.value.code == 2
