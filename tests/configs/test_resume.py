"""Resuming a killed training of a real config gives the same final weights as not stopping.

``semfpn_l1_ade20k.py`` at toy size runs 6 steps with a checkpoint every 2, once straight through
and once killed (SIGKILL, from a hook, right after the first checkpoint is on disk) and restarted
with ``tools/train.py --resume``. Both runs go through ``tools/train.py`` in subprocesses, so the
resume loads the checkpoint under torch's default ``torch.load(weights_only=True)``.

Deterministic settings: fixed seed, ``deterministic=True``, no random augmentation, no dropout
and no stochastic depth; mmengine re-seeds on resume but does not restore RNG states, so any
random op after the checkpoint would make the runs differ for reasons unrelated to resuming.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'semfpn_l1_ade20k.py'

KILLER = '''
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAfterFirstCheckpoint(Hook):
    """Hard-kill the process right after the checkpoint of ``at_iter`` has been written."""
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) in the same after_train_iter

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at_iter:
            os.kill(os.getpid(), signal.SIGKILL)
'''

DETERMINISTIC = '''
_base_ = {overlay!r}
_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='PackSegInputs'),
]
model = dict(backbone=dict(init_cfg=None, drop_path_rate=0.0),
             decode_head=dict(dropout_ratio=0.0))
train_dataloader = dict(dataset=dict(pipeline=_pipeline))
train_cfg = dict(max_iters=6, val_interval=1000)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=10),
                     logger=dict(interval=1))
randomness = dict(seed=0, deterministic=True)
'''


def train(config: Path, work_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [str(REPO), str(config.parent), os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(config), '--work-dir',
         str(work_dir), *extra], cwd=str(REPO), env=env, capture_output=True, text=True,
        timeout=600)


def final_weights(work_dir: Path) -> dict:
    ckpt = torch.load(work_dir / 'iter_6.pth', map_location='cpu', weights_only=False)
    return ckpt['state_dict']


@pytest.mark.slow
def test_killed_and_resumed_training_matches_uninterrupted(tmp_path, toy_ade, write_overlay):
    overlay = write_overlay(CONFIG, tmp_path, toy_ade, size=128, batch=2, num_train=4,
                            shuffle=True)
    config = tmp_path / 'resume_cfg.py'
    config.write_text(DETERMINISTIC.format(overlay=str(overlay)))
    killed_config = tmp_path / 'resume_cfg_killed.py'
    (tmp_path / 'kill_hook.py').write_text(KILLER)
    killed_config.write_text(
        f"_base_ = {str(config)!r}\n"
        "custom_imports = dict(imports=['mmeff', 'kill_hook'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='KillAfterFirstCheckpoint', at_iter=2)]\n")

    straight = train(config, tmp_path / 'straight')
    assert straight.returncode == 0, straight.stderr[-3000:]

    work = tmp_path / 'resumed'
    killed = train(killed_config, work)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    assert (work / 'iter_2.pth').is_file() and not (work / 'iter_4.pth').exists()
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')

    resumed = train(config, work, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed' in log.lower() and 'iter_2.pth' in log, log[-3000:]

    expected, got = final_weights(tmp_path / 'straight'), final_weights(work)
    assert expected.keys() == got.keys()
    differing = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:5]}'
    # and training did change the weights (the comparison is not between two initialisations)
    first = torch.load(work / 'iter_2.pth', map_location='cpu', weights_only=False)['state_dict']
    assert any(not torch.equal(first[k], got[k]) for k in got if got[k].is_floating_point())


def test_interrupted_checkpoint_write_keeps_latest_valid(tmp_path, toy_ade, write_overlay,
                                                         train_api, monkeypatch):
    """A save that dies half-way (here: the second one, after writing half its bytes) leaves
    ``last_checkpoint`` on the previous, complete checkpoint, and ``--resume`` continues from it.
    Runs ``semfpn_l1_ade20k.py`` through tools/train.py's in-process entry, whose checkpoint hook
    is the atomic one."""
    import io

    import mmengine.runner.runner as runner_module

    overlay = write_overlay(CONFIG, tmp_path, toy_ade, size=128, batch=1, num_train=2)
    config = tmp_path / 'atomic_cfg.py'
    config.write_text(DETERMINISTIC.format(overlay=str(overlay))
                      .replace('max_iters=6', 'max_iters=4'))
    work = tmp_path / 'work'
    real_save = runner_module.save_checkpoint
    calls = []

    def dying_save(checkpoint, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:  # write a truncated file under the name mmengine asked for, then die
            buf = io.BytesIO()
            torch.save(checkpoint, buf)
            with open(filename, 'wb') as f:
                f.write(buf.getvalue()[:buf.tell() // 2])
            raise KeyboardInterrupt('simulated kill during a checkpoint write')
        return real_save(checkpoint, filename, *args, **kwargs)

    monkeypatch.setattr(runner_module, 'save_checkpoint', dying_save)
    with pytest.raises(KeyboardInterrupt):
        train_api(config, work)
    assert len(calls) == 2
    latest = (work / 'last_checkpoint').read_text().strip()
    assert latest.endswith('iter_2.pth')
    assert not (work / 'iter_4.pth').exists()  # no truncated file under the final name
    # a complete mmengine checkpoint, loadable with weights_only=True once mmeff is imported
    ckpt = torch.load(latest, map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 2

    monkeypatch.setattr(runner_module, 'save_checkpoint', real_save)
    runner = train_api(config, work, None, '--resume')
    assert runner.iter == 4
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_4.pth')
