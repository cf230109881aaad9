"""Real multi-process training on CPU: ``tools/dist_train.sh CONFIG 2`` (torchrun, gloo on
127.0.0.1) for a toy detector (FCOS), and two "nodes" (NNODES=2 on 127.0.0.1) for a toy
segmentor (FCN head), with mmengine's default ``find_unused_parameters=False``.

Exactness: after N steps the weights of both ranks are identical and equal, within float
tolerance, to one process with the doubled batch. That holds in principle because nothing
differs but the reduction order: BN statistics are frozen (``norm_eval=True``; the heads use GN
or no norm), the sampler is ``DefaultSampler(shuffle=False)`` (rank r gets images r, r+2, ...:
step k of the two ranks sees the same images as step k of the single process), the pipelines
have no random op, dropout is 0, and the losses are normalised over the whole batch (FCOS
averages its positive counts across ranks with ``reduce_mean``; the pixel-mean cross-entropy
of equal-sized images is the mean of the per-rank means).
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch

from mmeff.testing import finish_group, free_port, start_group

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: a tiny EfficientFormer (the same code as L1, a few channels): one MB3D block at the end
ARCH = "dict(widths=[16, 16, 32, 32], depths=[1, 1, 1, 1], num_vit=1)"
SIZE = 64
#: bound on every launch: a hang fails the test instead of blocking the suite
LAUNCH_TIMEOUT = 300

COMMON = '''
custom_imports = dict(imports=['mmeff', 'ddp_hooks'], allow_failed_imports=False)
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval=10000)
val_cfg = None
val_dataloader = None
val_evaluator = None
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = []
default_hooks = dict(
    timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='DumpRankWeightsHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo', timeout=120))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
'''

DETECTOR = COMMON + '''
default_scope = 'mmdet'
model = dict(
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='mmeff.EfficientFormer', arch={arch}, out_indices=(1, 2, 3),
                  norm_eval=True, init_cfg=None),
    neck=dict(type='FPN', in_channels=[16, 32, 32], out_channels=32, start_level=0,
              add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(type='FCOSHead', num_classes=3, in_channels=32, stacked_convs=1,
                   feat_channels=32, strides=[8, 16, 32, 64, 128],
                   norm_cfg=dict(type='GN', num_groups=8, requires_grad=True)),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False, batch_sampler=None,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root={root!r},
                 metainfo=dict(classes=('rectangle', 'ellipse', 'triangle')),
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True),
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
                           dict(type='PackDetInputs')]))
'''

SEGMENTOR = COMMON + '''
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=({size}, {size})),
    backbone=dict(type='mmeff.EfficientFormer', arch={arch}, out_indices=(3,),
                  norm_eval=True, init_cfg=None),
    decode_head=dict(type='FCNHead', in_channels=32, in_index=0, channels=16, num_convs=1,
                     concat_input=False, dropout_ratio=0.0, num_classes=5, norm_cfg=None,
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ADE20KDataset', data_root={root!r},
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training'),
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', reduce_zero_label=True),
                           dict(type='Resize', scale=({size}, {size}), keep_ratio=False),
                           dict(type='PackSegInputs')]))
'''


@pytest.fixture(scope='module')
def toy_roots(tmp_path_factory) -> Dict[str, Path]:
    from mmeff.datasets import make_ade, make_coco
    base = tmp_path_factory.mktemp('dist_toy')
    make_coco(base / 'coco', num_train=4, num_val=1, size=(SIZE, SIZE), seed=0)
    make_ade(base / 'ade', num_train=4, num_val=1, size=(SIZE, SIZE), seed=0)
    return {'det': base / 'coco', 'seg': base / 'ade'}


def write_config(path: Path, kind: str, root: Path, batch: int, iters: int,
                 extra: str = '') -> Path:
    template = DETECTOR if kind == 'det' else SEGMENTOR
    path.write_text(template.format(arch=ARCH, size=SIZE, batch=batch, iters=iters,
                                    root=str(root) + '/') + extra)
    return path


def child_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1')
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), str(HERE), env.get('PYTHONPATH', '')])
    env.update(extra)
    return env


def start(cmd: List[str], env: Dict[str, str]) -> subprocess.Popen:
    return start_group(cmd, env, cwd=str(REPO))


def finish(proc: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT) -> str:
    """The launch's output; a launch that does not end in time is killed and fails the test
    (it never hangs the suite)."""
    in_time, out = finish_group(proc, timeout)
    if not in_time:
        pytest.fail(f'launch did not end within {timeout} s:\n{out[-3000:]}')
    return out


def dist_train(config: Path, work_dir: Path, nproc: int = 2, *args: str,
               env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    cmd = ['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), str(nproc),
           '--work-dir', str(work_dir), *args]
    return start(cmd, env or child_env(PORT=str(free_port())))


def single_train(config: Path, work_dir: Path) -> str:
    proc = start([sys.executable, str(REPO / 'tools' / 'train.py'), str(config),
                  '--work-dir', str(work_dir)], child_env())
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    return out


def load(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_weights(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], exact: bool):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def launch_two_ranks(config: Path, work_dir: Path, nodes: int) -> None:
    """Two ranks: ``dist_train.sh CONFIG 2`` on one node, or ``NNODES=2`` with NODE_RANK 0 / 1
    and one process each, meeting at MASTER_ADDR:PORT as two machines would."""
    if nodes == 1:
        procs = [dist_train(config, work_dir)]
    else:
        env = dict(NNODES='2', PORT=str(free_port()))
        procs = [dist_train(config, work_dir, 1, env=child_env(NODE_RANK=str(r), **env))
                 for r in (0, 1)]
    outs = [finish(p) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), '\n'.join(o[-2000:] for o in outs)


@pytest.mark.slow
@pytest.mark.parametrize('kind, nodes', [('det', 1), ('seg', 2)],
                         ids=['detector-1node-2procs', 'segmentor-2nodes-1proc'])
def test_two_ranks_equal_one_process_with_the_doubled_batch(kind, nodes, tmp_path, toy_roots):
    steps = 2
    dist_cfg = write_config(tmp_path / f'{kind}_dist.py', kind, toy_roots[kind], 1, steps)
    single_cfg = write_config(tmp_path / f'{kind}_single.py', kind, toy_roots[kind], 2, steps)
    launch_two_ranks(dist_cfg, tmp_path / 'dist', nodes)
    single_train(single_cfg, tmp_path / 'single')

    rank0 = load(tmp_path / 'dist' / 'weights_rank0.pth')
    rank1 = load(tmp_path / 'dist' / 'weights_rank1.pth')
    single = load(tmp_path / 'single' / 'weights_rank0.pth')
    assert_same_weights(rank0, rank1, exact=True)  # DDP keeps the replicas bit-identical
    assert_same_weights(rank0, single, exact=False)
    # not vacuous: training moved the weights, from the same start in both runs
    init = load(tmp_path / 'dist' / 'init_rank0.pth')
    assert_same_weights(init, load(tmp_path / 'single' / 'init_rank0.pth'), exact=True)
    moved = [k for k in init if not torch.equal(init[k], rank0[k])]
    assert len(moved) > len(init) // 4, moved


DIE = '''
custom_hooks = [dict(type='DumpRankWeightsHook'), dict(type='DieAtIterHook', iteration=3, rank=1)]
'''


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_an_error_and_resume_continues(tmp_path, toy_roots):
    """Rank 1 is SIGKILLed after step 3 (checkpoint at step 2): rank 0 must not wait in its
    next all-reduce forever; torchrun ends the run non-zero, naming the dead rank. Then
    ``--resume`` continues from the step-2 checkpoint to the end."""
    work = tmp_path / 'work'
    config = write_config(tmp_path / 'seg.py', 'seg', toy_roots['seg'], 1, 4)
    dying = write_config(tmp_path / 'seg_dying.py', 'seg', toy_roots['seg'], 1, 4, extra=DIE)
    proc = dist_train(dying, work)
    out = finish(proc, timeout=180)  # 120 s gloo timeout in the config bounds a hang
    assert proc.returncode != 0, out[-3000:]
    assert 'train.py FAILED' in out and 'SIGKILL' in out, out[-3000:]
    assert (work / 'iter_2.pth').is_file() and not (work / 'iter_4.pth').exists()

    proc = dist_train(config, work, 2, '--resume')
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out, out[-3000:]
    assert (work / 'iter_4.pth').is_file()
    assert_same_weights(load(work / 'weights_rank0.pth'), load(work / 'weights_rank1.pth'),
                        exact=True)


@pytest.mark.parametrize('script, args, tool', [
    ('slurm_train.sh', ['part', 'job', 'cfg.py', 'work', '--resume'], 'train.py'),
    ('slurm_test.sh', ['part', 'job', 'cfg.py', 'ckpt.pth', '--show-dir', 'out'], 'test.py'),
])
def test_slurm_scripts_run_one_task_per_gpu_with_the_slurm_launcher(tmp_path, script, args,
                                                                    tool):
    """MMDet's Slurm scripts: srun with the partition, GPUS tasks, GPUS_PER_NODE per node,
    the tool with --launcher=slurm and the extra options; missing arguments exit 2. (srun is a
    stand-in here that records its arguments.)"""
    record = tmp_path / 'srun_args'
    fake = tmp_path / 'bin' / 'srun'
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{fake.parent}{os.pathsep}{os.environ["PATH"]}', GPUS='16',
               GPUS_PER_NODE='8')
    path = str(REPO / 'tools' / script)
    assert subprocess.run(['bash', path, *args], env=env).returncode == 0
    argv = record.read_text().splitlines()
    assert argv[:2] == ['-p', 'part'] and '--ntasks=16' in argv and '--gres=gpu:8' in argv
    tail = argv[argv.index(str(REPO / 'tools' / tool)):]
    assert tail[1] == 'cfg.py' and '--launcher=slurm' in tail and tail[-1] == args[-1]
    bad = subprocess.run(['bash', path, 'part'], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and 'usage' in bad.stderr


def test_pytorch_launcher_without_torchrun_says_how_to_start(monkeypatch):
    """``--launcher pytorch`` in a plain process (no torchrun environment) on a CPU machine: a
    message naming dist_train.sh, not mmengine's CUDA error or a KeyError on RANK."""
    from mmengine.config import Config

    from mmeff.engine.launch import init_cpu_distributed
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    cfg = Config(dict(launcher='pytorch'))
    with pytest.raises(ValueError, match=r"\['RANK', 'WORLD_SIZE'.*dist_train.sh"):
        init_cpu_distributed(cfg)
    # what the Runner will be given: gloo, and a CPU wrapper without device ids
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.find_unused_parameters is False
    assert not init_cpu_distributed(Config(dict(launcher='none')))
