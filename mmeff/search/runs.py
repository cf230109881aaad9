"""Training and evaluation of the search's networks through the classification module.

The supernet and the from-scratch networks (derived and random, Table 5) are trained by
``mmeff.engine.launch.train`` — what ``tools/train.py`` runs — on the config of the search
(the ``configs/cls`` recipe + toy or real ImageNet data), so there is one training path for
pretraining and search. Slimming evaluates hundreds of subnets; for that the validation split
is preprocessed once into tensors (:func:`val_tensors`) and scored in-process.
"""
import copy
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from mmeff.registry import MODELS


def prepare_data(cfg: Config) -> None:
    """Write the toy ImageNet tree (``cfg.toy_imagenet``) when ``data_root`` is missing."""
    root = Path(cfg.train_dataloader.dataset.data_root)
    if root.is_dir():
        return
    if not cfg.get('toy_imagenet'):
        raise ValueError(f'data_root {root} does not exist; point train/val_dataloader '
                         'data_root at an ImageNet class-folder tree or set toy_imagenet=dict('
                         'num_train=..., num_val=..., size=(H, W)) to write a toy one')
    from mmeff.datasets.toy_data import make_imagenet
    make_imagenet(root, **cfg.toy_imagenet)


def build_model(cfg: Config) -> torch.nn.Module:
    """``cfg.model`` with the config's data preprocessor, as the runner builds it."""
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    return MODELS.build(model_cfg)


def train_config(config_path: Path, work_dir: Path,
                 cfg_options: Sequence[str] = ()) -> torch.nn.Module:
    """Train ``config_path`` as ``tools/train.py CONFIG --work-dir WORK_DIR [--cfg-options
    ...]`` (e.g. ``randomness.seed=1``); the model."""
    from mmeff.engine.launch import train
    options = ['--cfg-options', *cfg_options] if cfg_options else []
    runner = train([str(config_path), '--work-dir', str(work_dir), *options])
    return runner.model


@torch.no_grad()
def val_tensors(cfg: Config, model: torch.nn.Module, split: Optional[str] = None,
                max_images: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The validation split (or ``split`` of the same tree, e.g. ``'train'`` images for BatchNorm
    recalibration) through the eval transform and the model's preprocessor; the first
    ``max_images`` of the loader's order when given."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.val_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    if split is not None:
        loader_cfg['dataset'].update(split=split, train=False)
        loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)  # all classes early
    xs, ys = [], []
    for batch in Runner.build_dataloader(loader_cfg, seed=0):
        data = model.data_preprocessor(batch, False)
        xs.append(data['inputs'])
        ys.append(data['data_samples']['gt_label'])
        if max_images is not None and sum(len(y) for y in ys) >= max_images:
            break
    xs, ys = torch.cat(xs), torch.cat(ys)
    return (xs, ys) if max_images is None else (xs[:max_images], ys[:max_images])


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 128) -> float:
    """Top-1 in % of an ``ImageClassifier`` (eval mode) on preprocessed tensors."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size], mode='tensor')
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return 100.0 * correct / len(images)


def num_params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6

