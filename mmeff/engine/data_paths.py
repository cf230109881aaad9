"""Fail early, and helpfully, when a config points at a dataset that is not on disk.

Without this, a missing COCO/ADE20K/ImageNet shows up minutes later as a bare FileNotFoundError
from deep inside a dataset's ``load_data_list`` (or in the middle of training, when the
validation loader is first built). ``check_data_paths`` walks the dataloader and evaluator
configs the run will use, resolves paths exactly as mmengine's ``BaseDataset`` does (``ann_file``
and every ``data_prefix`` entry are joined to ``data_root`` unless absolute) and raises one
``MissingDataError`` listing every missing path with instructions to download the real dataset
or generate the toy one.
"""
import contextlib
import json
import os
import shlex
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from mmeff.datasets.toy_data import COCO_CLASSES, TOY_SUBDIRS

# kind -> (name, where to download, expected layout under the default data_root)
_REAL_DATA = {
    'coco': ('COCO 2017', 'https://cocodataset.org/#download '
             '(2017 Train images, 2017 Val images, 2017 Train/Val annotations)',
             'data/coco/annotations/instances_{train,val}2017.json\n'
             '        data/coco/train2017/*.jpg\n'
             '        data/coco/val2017/*.jpg'),
    'ade': ('ADE20K (SceneParsing ADEChallengeData2016)',
            'http://sceneparsing.csail.mit.edu/ (ADEChallengeData2016.zip)',
            'data/ade/ADEChallengeData2016/images/{training,validation}/*.jpg\n'
            '        data/ade/ADEChallengeData2016/annotations/{training,validation}/*.png'),
    'imagenet': ('ImageNet-1k (ILSVRC2012)', 'https://image-net.org/download.php',
                 'data/imagenet/train/<wnid>/*.JPEG\n'
                 '        data/imagenet/val/<wnid>/*.JPEG'),
}


class MissingDataError(FileNotFoundError):
    """A dataset path named by the config does not exist."""


def _join(root: Optional[str], path: str) -> str:
    if root and not os.path.isabs(path):
        return os.path.join(root, path)
    return path


def _is_remote(path: str) -> bool:
    return '://' in path


def _guess_kind(type_name: str, paths: Sequence[str]) -> Optional[str]:
    text = ' '.join([type_name] + list(paths)).lower()
    if 'coco' in text:
        return 'coco'
    if 'ade' in text:
        return 'ade'
    if 'imagenet' in text or 'imagefolder' in text:
        return 'imagenet'
    return None


def _iter_datasets(cfg: Mapping, key: str) -> Iterator[Tuple[str, Mapping]]:
    """Yield (config key, dataset cfg) for a dataset and the datasets wrapped inside it."""
    yield key, cfg
    inner = cfg.get('dataset')
    if isinstance(inner, Mapping):
        yield from _iter_datasets(inner, f'{key}.dataset')
    for i, sub in enumerate(cfg.get('datasets') or []):
        if isinstance(sub, Mapping):
            yield from _iter_datasets(sub, f'{key}.datasets.{i}')


def _dataset_paths(ds: Mapping, key: str) -> List[Tuple[str, str]]:
    """(config key, resolved path) for every path a dataset will read, data_root first."""
    root = ds.get('data_root')
    out = []
    if isinstance(root, str) and root:
        out.append((f'{key}.data_root', root))
    ann = ds.get('ann_file')
    if isinstance(ann, str) and ann:
        out.append((f'{key}.ann_file', _join(root, ann)))
    prefix = ds.get('data_prefix')
    if isinstance(prefix, Mapping):
        for name, value in prefix.items():
            if isinstance(value, str):
                out.append((f'{key}.data_prefix.{name}', _join(root, value) if value else
                            (root or '.')))
    elif isinstance(prefix, str) and prefix:  # older / custom datasets take a plain string
        out.append((f'{key}.data_prefix', _join(root, prefix)))
    return out


def _sections(cfg: Mapping, mode: str) -> List[str]:
    if mode == 'train':
        names = ['train_dataloader']
        if cfg.get('val_cfg') is not None and cfg.get('val_dataloader'):
            names += ['val_dataloader', 'val_evaluator']
        return names
    if mode == 'val':
        return ['val_dataloader', 'val_evaluator']
    if mode == 'test':
        return ['test_dataloader', 'test_evaluator']
    raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")


def _path_groups(cfg: Mapping, mode: str) -> Iterator[List[Tuple[str, str, Optional[str]]]]:
    """(config key, path, dataset kind or None) of every local path the sections ``mode`` uses
    read, one list per dataset or metric (a dataset's data_root first)."""
    for section in _sections(cfg, mode):
        node: Any = cfg.get(section)
        if not node:
            continue
        if section.endswith('_evaluator'):  # e.g. CocoMetric's ann_file
            metrics = node if isinstance(node, (list, tuple)) else [node]
            for i, metric in enumerate(metrics):
                ann = metric.get('ann_file') if isinstance(metric, Mapping) else None
                if isinstance(ann, str) and ann and not _is_remote(ann):
                    key = section if len(metrics) == 1 else f'{section}.{i}'
                    yield [(f'{key}.ann_file', ann,
                            _guess_kind(str(metric.get('type', '')), [ann]))]
            continue
        dataset = node.get('dataset') if isinstance(node, Mapping) else None
        if not isinstance(dataset, Mapping):
            continue
        for key, ds in _iter_datasets(dataset, f'{section}.dataset'):
            paths = _dataset_paths(ds, key)
            kind = _guess_kind(str(ds.get('type', '')), [p for _, p in paths])
            yield [(k, p, kind) for k, p in paths if not _is_remote(p)]


def find_missing_data(cfg: Mapping, mode: str = 'train') -> List[Tuple[str, str, Optional[str]]]:
    """(config key, missing path, dataset kind or None) for the sections ``mode`` uses."""
    missing = []
    for group in _path_groups(cfg, mode):
        for path_key, path, kind in group:
            if os.path.exists(path):
                continue
            missing.append((path_key, path, kind))
            if path_key.endswith('.data_root'):
                break  # everything below a missing root is missing too: name the root only
    return missing


def find_broken_json(cfg: Mapping, mode: str = 'train') -> List[Tuple[str, str, str]]:
    """(config key, path, parse error) of every annotation file ``mode`` reads that exists but
    is not valid JSON. Parsing a large COCO file takes seconds, so this runs only once a JSON
    error has happened, to name the file the parser's message does not."""
    broken = []
    for group in _path_groups(cfg, mode):
        for key, path, _ in group:
            if not (path.endswith('.json') and os.path.isfile(path)):
                continue
            try:
                with open(path, 'rb') as f:
                    json.load(f)
            except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
                broken.append((key, path, str(err) or type(err).__name__))
    return broken


class BrokenDataError(ValueError):
    """A dataset file the config names exists but cannot be parsed."""


@contextlib.contextmanager
def naming_broken_json(cfg: Mapping, mode: str) -> Iterator[None]:
    """Turn a JSON parse error raised inside the block (by a dataset or metric reading its
    annotation file; the parser names no file) into a ``BrokenDataError`` naming the file."""
    try:
        yield
    except json.JSONDecodeError as err:
        broken = find_broken_json(cfg, mode)
        if not broken:
            raise
        listing = '\n'.join(f'  {key} -> {os.path.abspath(path)}: {why}'
                            for key, path, why in broken)
        raise BrokenDataError(
            f'annotation file(s) used by this config are not valid JSON:\n{listing}\n'
            'The file is truncated or damaged: download it again, or regenerate the toy data '
            'with `python tools/make_toy_data.py --out data/toy`.') from err


def _toy_overrides(missing: Sequence[Tuple[str, str, Optional[str]]]) -> List[str]:
    """``key=value`` options that point the missing roots (and evaluator files) at toy data."""
    roots = {}
    out = []
    for key, path, kind in missing:
        if key.endswith('.data_root') and kind:
            roots[path] = f'data/toy/{TOY_SUBDIRS[kind]}/'
            out.append(f'{key}={roots[path]}')
            if kind == 'coco':  # the toy categories are shapes, not COCO's 80 classes
                prefix = key[:-len('.data_root')]
                out.append(f'{prefix}.metainfo.classes=({",".join(COCO_CLASSES)})')
    for key, path, kind in missing:
        if key.endswith('.ann_file') and '_evaluator' in key.split('.')[0]:
            for root, toy in roots.items():
                if path.startswith(root):
                    out.append(f'{key}={os.path.join(toy, path[len(root):].lstrip("/"))}')
                    break
    return out


def _advice(missing: Sequence[Tuple[str, str, Optional[str]]]) -> str:
    lines = []
    overrides = _toy_overrides(missing)
    for kind in dict.fromkeys(k for _, _, k in missing if k):
        name, url, layout = _REAL_DATA[kind]
        toy_root = f'data/toy/{TOY_SUBDIRS[kind]}/'
        lines += [
            f'{name} is not bundled and is never downloaded automatically.',
            f'  * Real data: download it from {url}',
            f'    and arrange it as\n        {layout}',
            '    (or symlink your copy there, or point data_root at it with --cfg-options).',
            '  * To smoke-test the pipeline without it, generate a small toy dataset in the same',
            f'    format:\n        python tools/make_toy_data.py --kinds {kind} --out data/toy',
            f'    which writes {toy_root}',
        ]
    if overrides:
        options = ' '.join(map(shlex.quote, overrides))
        lines.append(f'    and run with\n        --cfg-options {options}')
    if not lines:
        lines.append('Fix the paths in the config (or with --cfg-options), or generate toy data '
                     'with `python tools/make_toy_data.py --out data/toy`.')
    return '\n'.join(lines)


def check_data_paths(cfg: Mapping, mode: str = 'train') -> None:
    """Raise ``MissingDataError`` naming every missing dataset path and how to get the data."""
    missing = find_missing_data(cfg, mode)
    if not missing:
        return
    listing = '\n'.join(f'  {key} -> {os.path.abspath(path)!s} (not found)'
                        for key, path, _ in missing)
    hint = _advice(missing)
    raise MissingDataError(f'dataset path(s) used by this config do not exist:\n{listing}\n'
                           f'{hint}')
