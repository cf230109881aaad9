"""The logic behind ``tools/train.py`` and ``tools/test.py``, importable so tests run it in-process.

One entry point serves detection, segmentation and classification configs: the config's
``default_scope`` ('mmdet', 'mmseg' or 'mmeff') decides which package's modules are registered,
and the run is built with mmengine's ``Runner.from_cfg`` (or ``RUNNERS`` when the config names a
``runner_type``), as MMDet's and MMSeg's own tools do. On top of them it adds:

* a check of every dataset path before anything is built (``data_paths.check_data_paths``);
* checkpoint loading with mmengine's runner types allow-listed: torch >= 2.6 loads with
  ``weights_only=True`` and mmengine 0.10.7 does not say otherwise, so resuming a checkpoint whose
  message hub holds numpy values / ``HistoryBuffer``s would raise ``UnpicklingError``.
  ``import mmeff`` admits exactly those types (``mmeff.checkpoint.io.allow_runner_checkpoints``);
  arbitrary pickled objects stay refused;
* ``AtomicCheckpointHook`` in place of a plain ``CheckpointHook``, so an interrupted save never
  leaves a corrupt latest checkpoint behind, and each checkpoint has a digest record;
* ``--launcher pytorch`` without CUDA (``tools/dist_train.sh CONFIG N`` on CPU machines, the
  multi-process tests): mmengine 0.10.7 calls ``torch.cuda.set_device`` in its pytorch launcher,
  so here the process group is initialised with gloo from torchrun's environment and the model
  is wrapped without ``device_ids`` (:func:`init_cpu_distributed`).
* checkpoint verification before anything is built: ``--resume`` falls back to the newest intact
  checkpoint and says which it skipped and why; ``--resume PATH`` and tools/test.py's
  checkpoint are refused with the reason when damaged (mmeff/engine/resume.py);
* input errors (a bad option, config, dataset path or checkpoint) end the tools with a message
  and exit status 2, not a traceback.
"""
import argparse
import datetime
import importlib
import importlib.util
import os
import os.path as osp
import sys
from typing import List, NoReturn, Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmeff.checkpoint.integrity import CheckpointIntegrityError
from mmeff.checkpoint.io import UnsafeCheckpointError
from mmeff.engine.data_paths import (BrokenDataError, MissingDataError, check_data_paths,
                                     naming_broken_json)
from mmeff.engine.hooks.non_finite_hook import NonFiniteError
from mmeff.engine.pyramid import PyramidMismatchError, check_pyramid
from mmeff.engine.resume import check_checkpoint, resolve_auto_resume

#: default_scope -> module whose ``register_all_modules`` registers that package
SCOPE_REGISTRARS = {'mmdet': 'mmdet.utils', 'mmseg': 'mmseg.utils', 'mmeff': None,
                    'mmengine': None}
_MMEFF_MODULES = ('mmeff.models', 'mmeff.datasets', 'mmeff.engine', 'mmeff.evaluation')
_LAUNCHERS = ['none', 'pytorch', 'slurm', 'mpi']
ATOMIC_CHECKPOINT_HOOK = 'mmeff.AtomicCheckpointHook'
DUMP_EXTENSIONS = ('.pkl', '.pickle')
#: default_scope -> the metric that dumps predictions (MMDet's tools/test.py uses DumpDetResults)
DUMP_METRICS = {'mmdet': 'DumpDetResults'}
NON_FINITE_CHECK_HOOK = 'mmeff.NonFiniteCheckHook'
#: what the user gave wrong (options, a config that does not parse, data, a checkpoint): the
#: tools print a message and exit with status 2 (tools/convert_checkpoint.py and export.py too)
INPUT_ERRORS = (ValueError, FileNotFoundError, SyntaxError, UnsafeCheckpointError,
                PyramidMismatchError)
#: the same, found once the run is under way (anything else keeps its traceback)
RUN_INPUT_ERRORS = (MissingDataError, BrokenDataError, CheckpointIntegrityError,
                    UnsafeCheckpointError, NonFiniteError)


# ----------------------------------------------------------------------------------- arguments
def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: '
                        'the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, xxx=yyy style, e.g. '
             'train_dataloader.dataset.data_root=data/toy/coco/ (lists: key="[a,b]")')
    parser.add_argument('--launcher', choices=_LAUNCHERS, default='none',
                        help='job launcher (tools/dist_train.sh passes "pytorch")')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse_train_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a detector (default_scope mmdet), segmentor (mmseg) or classifier '
                    '(mmeff) from an mmengine config')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='CKPT',
        help='resume from CKPT, or without a value from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper; needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual total batch size')
    _common_args(parser)
    return parser.parse_args(argv)


def parse_test_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint on the test set')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='save drawn predictions under this directory')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument('--out', metavar='FILE.pkl',
                        help='also dump every prediction to this pickle file, as MMDet\'s '
                             'tools/test.py does (detectors: DumpDetResults, masks RLE-encoded; '
                             'segmentors / classifiers: mmengine DumpResults)')
    _common_args(parser)
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.endswith(DUMP_EXTENSIONS):
        parser.error(f'--out {args.out!r}: the dump is a pickle, give a file name ending in '
                     f"{' or '.join(DUMP_EXTENSIONS)}")
    return args


# ------------------------------------------------------------------------------------- config
def register_scope(scope: Optional[str]) -> None:
    """Import mmeff and register the modules of the package that owns ``scope``."""
    if scope not in SCOPE_REGISTRARS:
        raise ValueError(
            f'config default_scope is {scope!r}; tools/train.py and tools/test.py support '
            f'{sorted(SCOPE_REGISTRARS)}. Detection configs inheriting mmdet:: bases get '
            "'mmdet', segmentation ones 'mmseg'; set default_scope = 'mmeff' for "
            'classification configs.')
    for name in _MMEFF_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    registrar = SCOPE_REGISTRARS[scope]
    if registrar:  # the Runner sets the default scope itself from cfg.default_scope
        importlib.import_module(registrar).register_all_modules(init_default_scope=False)


def load_config(path: str, cfg_options: Optional[dict], work_dir: Optional[str],
                launcher: str, local_rank: int) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path!r}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    os.environ.setdefault('LOCAL_RANK', str(local_rank))
    if work_dir is not None:  # priority: CLI > config > config name
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    register_scope(cfg.get('default_scope'))
    return cfg


def use_atomic_checkpoint_hook(cfg: Config) -> None:
    """Swap ``type='CheckpointHook'`` for ``AtomicCheckpointHook`` (same arguments).

    A config that names ``'mmengine.CheckpointHook'`` explicitly keeps mmengine's hook.
    """
    hooks = [cfg.get('default_hooks', {}).get('checkpoint')] + list(cfg.get('custom_hooks') or [])
    for hook in hooks:
        if isinstance(hook, dict) and hook.get('type') == 'CheckpointHook':
            hook['type'] = ATOMIC_CHECKPOINT_HOOK


def use_non_finite_check(cfg: Config) -> None:
    """Add ``NonFiniteCheckHook`` (stop at the first NaN/Inf input or loss) unless the config
    says ``non_finite_check = False`` or lists the hook itself."""
    if cfg.get('non_finite_check', True) is False:
        return
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and str(h.get('type', '')).endswith('NonFiniteCheckHook')
               for h in hooks):
        cfg.custom_hooks = hooks + [dict(type=NON_FINITE_CHECK_HOOK)]


def _enable_amp(cfg: Config) -> None:
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        raise ValueError('--amp needs a CUDA (or NPU/MLU/MUSA) device and none is available; '
                         'drop --amp to train in fp32 on this machine')
    if cfg.optim_wrapper.get('type') != 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def _set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume``: verify the named checkpoint, or pick the newest intact one of the work dir
    (mmeff/engine/resume.py); mmengine then resumes from ``cfg.load_from``."""
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':
        cfg.load_from = resolve_auto_resume(cfg.work_dir)
        return
    if '://' not in resume and not osp.isfile(resume):
        raise FileNotFoundError(f'--resume checkpoint not found: {resume!r}')
    check_checkpoint(resume, resume=True)
    cfg.load_from = resume


def build_train_config(argv: Optional[Sequence[str]] = None) -> Config:
    """Parse tools/train.py arguments into a ready-to-build config (data paths checked)."""
    args = parse_train_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher,
                      args.local_rank)
    if args.amp:
        _enable_amp(cfg)
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not scale or 'base_batch_size' not in scale:
            raise ValueError('--auto-scale-lr needs auto_scale_lr = dict(enable=False, '
                             'base_batch_size=<total batch size the lr was tuned for>) in the '
                             'config')
        cfg.auto_scale_lr.enable = True
    use_atomic_checkpoint_hook(cfg)
    check_pyramid(cfg.get('model') or {})
    use_non_finite_check(cfg)
    check_data_paths(cfg, 'train')
    _set_resume(cfg, args.resume)  # last: it reads whole checkpoints
    return cfg


def _trigger_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need a visualization hook: add '
                         "default_hooks.visualization = dict(type='DetVisualizationHook') "
                         "(or 'SegVisualizationHook') to the config")
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if cfg.get('default_scope') == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:  # MMSeg's hook draws through the visualizer's backends
            cfg.visualizer['save_dir'] = args.show_dir


def build_test_config(argv: Optional[Sequence[str]] = None) -> Config:
    """Parse tools/test.py arguments into a ready-to-build config (paths checked)."""
    args = parse_test_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher,
                      args.local_rank)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint!r}')
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _trigger_visualization(cfg, args)
    check_pyramid(cfg.get('model') or {})
    if args.out:
        add_dump_metric(cfg, args.out)
    check_data_paths(cfg, 'test')
    check_checkpoint(args.checkpoint)  # last: it reads the whole file
    return cfg


def add_dump_metric(cfg: Config, out_file: str) -> None:
    """Append the metric that pickles every prediction to ``out_file`` to the test evaluator
    (``--out``), next to the config's own metrics, so one pass scores and dumps."""
    dump = dict(type=DUMP_METRICS.get(cfg.get('default_scope'), 'DumpResults'),
                out_file_path=out_file)
    evaluator = cfg.get('test_evaluator')
    if isinstance(evaluator, dict) and 'metrics' in evaluator:  # dict(type='Evaluator', ...)
        metrics = evaluator['metrics']
        evaluator['metrics'] = list(metrics if isinstance(metrics, (list, tuple))
                                    else [metrics]) + [dump]
    elif isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = list(evaluator) + [dump]
    else:
        cfg.test_evaluator = ([evaluator] if evaluator else []) + [dump]


# ------------------------------------------------------------------------------------ running
#: seconds a collective waits for a peer before failing (mmengine's and torch's default is 30
#: minutes); env_cfg.dist_cfg.timeout in a config overrides it
DEFAULT_DIST_TIMEOUT = 1800
_TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def init_cpu_distributed(cfg: Config) -> bool:
    """Start the gloo process group for ``--launcher pytorch`` on a machine without CUDA.

    mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` (fails without CUDA) and
    wraps the model with ``device_ids=[LOCAL_RANK]`` (DDP refuses device ids for a CPU model).
    So the group is initialised here, before the Runner, which then skips its own
    initialisation, and ``model_wrapper_cfg`` wraps without device ids. A dead peer makes
    the collectives fail instead of waiting forever: gloo raises as soon as the connection
    closes, and ``env_cfg.dist_cfg.timeout`` (seconds) bounds a peer that hangs. Returns
    whether it initialised the group."""
    if cfg.get('launcher') != 'pytorch' or torch.cuda.is_available():
        return False
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    # the config's value wins over the Runner's default device_ids=[LOCAL_RANK]
    cfg.model_wrapper_cfg.setdefault('device_ids', None)
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = {}
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = {}
    dist_cfg = cfg.env_cfg.dist_cfg
    dist_cfg.backend = 'gloo'  # the one CPU backend (nccl needs CUDA)
    if dist.is_initialized():  # a second run in the same processes
        return False
    missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise ValueError(f'--launcher pytorch needs the environment torchrun sets; {missing} '
                         'are not set. Start with tools/dist_train.sh CONFIG NPROC (torchrun), '
                         'or drop --launcher for one process')
    timeout = datetime.timedelta(seconds=dist_cfg.get('timeout', DEFAULT_DIST_TIMEOUT))
    dist.init_process_group(backend='gloo', timeout=timeout)
    return True


def build_runner(cfg: Config) -> Runner:
    init_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def run(cfg: Config, mode: str):
    """Build the runner of a checked config and train (returns the runner) or test (returns
    the metrics)."""
    # resume / load_from go through torch.load(weights_only=True); datasets and metrics read
    # their annotation files while the runner is built or run
    with naming_broken_json(cfg, mode):
        runner = build_runner(cfg)
        if mode == 'train':
            runner.train()
            return runner
        return runner.test()


def train(argv: Optional[List[str]] = None) -> Runner:
    """tools/train.py: returns the runner after training (its ``model`` holds the weights)."""
    return run(build_train_config(argv), 'train')


def test(argv: Optional[List[str]] = None) -> dict:
    """tools/test.py: returns the metrics."""
    return run(build_test_config(argv), 'test')


def _exit_input_error(err: BaseException) -> NoReturn:
    print(f'{type(err).__name__}: {err}', file=sys.stderr)
    raise SystemExit(2) from None


def main(mode: str, argv: Optional[List[str]] = None) -> None:
    """Console entry: input errors (bad options, config, data paths or checkpoint before the
    run; a broken annotation file or a NaN/Inf sample during it) are reported as one message
    and exit status 2, not a traceback. Other errors during the run keep their traceback."""
    try:
        cfg = build_train_config(argv) if mode == 'train' else build_test_config(argv)
    except INPUT_ERRORS as err:
        _exit_input_error(err)
    try:
        run(cfg, mode)
    except RUN_INPUT_ERRORS as err:
        _exit_input_error(err)
