"""tools/train.py / tools/test.py logic: resume under weights_only, atomic checkpoints, options."""
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.runner.checkpoint import _load_checkpoint

import mmeff  # noqa: F401  (allows the runner checkpoint types)
from mmeff.engine import launch
from mmeff.engine.atomic_io import atomic_target, write_text_atomic

REPO = Path(__file__).parents[2]


def _assert_same_weights(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _started(tiny, work_dir) -> list:
    return tiny.EPOCHS_STARTED[str(Path(work_dir).resolve())]


def _latest(work_dir) -> str:
    return (Path(work_dir) / 'last_checkpoint').read_text().strip()


def _checkpoint_state(path: str) -> str:
    """'ok', 'missing' or 'corrupt' (present but unreadable): the two failures are different
    bugs, so the tests name the one they expect."""
    if not os.path.isfile(path):
        return 'missing'
    try:
        _load_checkpoint(path, map_location='cpu')  # weights_only; import mmeff allows the types
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):  # truncated zip: OSError
        return 'corrupt'
    return 'ok'


@pytest.fixture
def uninterrupted(tiny, tiny_config, tmp_path):
    """Two epochs in one go: the reference the interrupted runs must reproduce exactly."""
    work_dir = tmp_path / 'uninterrupted'
    runner = launch.train(tiny.run_args(tiny_config, work_dir))
    assert _started(tiny, work_dir) == [0, 1]
    return work_dir, tiny.weights(runner)


def test_resume_after_kill_matches_uninterrupted_run(tiny, tiny_config, tmp_path,
                                                     uninterrupted):
    _, reference = uninterrupted
    work_dir = tmp_path / 'killed'
    with pytest.raises(tiny.SimulatedKill):
        launch.train(tiny.run_args(tiny_config, work_dir, options=['custom_hooks.1.at_epoch=1']))
    assert _latest(work_dir).endswith('epoch_1.pth')
    assert not (work_dir / 'epoch_2.pth').exists()
    # The trap being handled: torch >= 2.6 refuses mmengine's checkpoints by default (without
    # the allow-list that import mmeff installs).
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
            torch.load(work_dir / 'epoch_1.pth')
    finally:
        torch.serialization.add_safe_globals(allowed)

    runner = launch.train(tiny.run_args(tiny_config, work_dir, '--resume'))
    assert _started(tiny, work_dir) == [0, 1, 1]  # the resumed run trained epoch 1 only
    _assert_same_weights(tiny.weights(runner), reference)


def test_resume_from_explicit_checkpoint(tiny, tiny_config, tmp_path, uninterrupted):
    ref_dir, reference = uninterrupted
    work_dir = tmp_path / 'explicit'
    runner = launch.train(tiny.run_args(tiny_config, work_dir, '--resume',
                                   str(ref_dir / 'epoch_1.pth')))
    assert _started(tiny, work_dir) == [1]
    _assert_same_weights(tiny.weights(runner), reference)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        launch.build_train_config(tiny.run_args(tiny_config, work_dir, '--resume',
                                           str(tmp_path / 'nope.pth')))


def test_test_entry_point_evaluates_a_runner_checkpoint(tiny, tiny_config, tmp_path,
                                                       uninterrupted):
    ref_dir, reference = uninterrupted
    metrics = launch.test([tiny_config, str(ref_dir / 'epoch_2.pth'), '--work-dir',
                           str(tmp_path / 'test')])
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    model.load_state_dict({k[len('fc.'):]: v for k, v in reference.items()})
    data = tiny.Data(n=8, seed=1)
    with torch.no_grad():
        expected = ((model(data.x) - data.y) ** 2).mean().item()
    assert metrics['mse'] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        launch.build_test_config([tiny_config, str(tmp_path / 'missing.pth')])


def _fail_second_epoch_saves(monkeypatch) -> None:
    """Saves of epoch_2.pth (or its temp file) die half-way: disk full / killed mid-write."""
    original = LocalBackend.put

    def put(self, obj, filepath):
        if 'epoch_2' in os.path.basename(str(filepath)):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError('No space left on device (simulated)')
        return original(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put)


@pytest.mark.parametrize('hook', ['CheckpointHook', 'mmengine.CheckpointHook'],
                         ids=['atomic', 'mmengine-control'])
def test_interrupted_write_with_max_keep_one(tiny, tiny_config, tmp_path, monkeypatch, hook,
                                             uninterrupted):
    """max_keep_ckpts=1: mmengine deletes epoch_1.pth before writing epoch_2.pth."""
    work_dir = tmp_path / 'keep1'
    options = ['default_hooks.checkpoint.max_keep_ckpts=1', f'default_hooks.checkpoint.type={hook}']
    _fail_second_epoch_saves(monkeypatch)
    with pytest.raises(OSError, match='simulated'):
        launch.train(tiny.run_args(tiny_config, work_dir, options=options))
    monkeypatch.undo()
    latest = _latest(work_dir)
    if hook == 'mmengine.CheckpointHook':  # the failure this hook exists for: epoch_1
        assert _checkpoint_state(latest) == 'missing'  # deleted, epoch_2 never completed
        return
    assert latest.endswith('epoch_1.pth') and _checkpoint_state(latest) == 'ok'
    assert not (work_dir / 'epoch_2.pth').exists()
    assert not list(work_dir.glob('*.tmp'))
    runner = launch.train(tiny.run_args(tiny_config, work_dir, '--resume', options=options))
    _assert_same_weights(tiny.weights(runner), uninterrupted[1])
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_2.pth']  # kept just one
    assert sorted(p.name for p in work_dir.glob('*.sha256')) == ['epoch_2.pth.sha256']


@pytest.mark.parametrize('hook', ['CheckpointHook', 'mmengine.CheckpointHook'],
                         ids=['atomic', 'mmengine-control'])
def test_interrupted_rewrite_of_the_latest_checkpoint(tiny, tiny_config, tmp_path, monkeypatch,
                                                      hook, uninterrupted):
    """Re-running epoch 2 over an existing epoch_2.pth (the latest) and dying mid-write."""
    ref_dir, _ = uninterrupted
    work_dir = tmp_path / 'rewrite'
    shutil.copytree(ref_dir, work_dir)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
    before = (work_dir / 'epoch_2.pth').read_bytes()
    _fail_second_epoch_saves(monkeypatch)
    with pytest.raises(OSError, match='simulated'):
        launch.train(tiny.run_args(tiny_config, work_dir, '--resume', str(work_dir / 'epoch_1.pth'),
                              options=[f'default_hooks.checkpoint.type={hook}']))
    monkeypatch.undo()
    latest = _latest(work_dir)
    assert latest.endswith('epoch_2.pth')
    if hook == 'mmengine.CheckpointHook':
        assert _checkpoint_state(latest) == 'corrupt'  # overwritten in place, half-written
        return
    assert _checkpoint_state(latest) == 'ok' and (work_dir / 'epoch_2.pth').read_bytes() == before
    assert not list(work_dir.glob('*.tmp'))


def test_atomic_target_replaces_or_leaves_untouched(tmp_path):
    final = tmp_path / 'last_checkpoint'
    write_text_atomic(str(final), 'old')
    (tmp_path / 'last_checkpoint.tmp').write_text('left by a killed run')
    with pytest.raises(KeyError):
        with atomic_target(str(final)) as tmp:
            Path(tmp).write_text('half')
            raise KeyError('interrupted')
    assert final.read_text() == 'old' and not Path(tmp).exists()
    write_text_atomic(str(final), 'new')
    assert final.read_text() == 'new' and sorted(os.listdir(tmp_path)) == ['last_checkpoint']


def test_config_handling(tiny, tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = launch.build_train_config([tiny_config])
    assert cfg.work_dir == os.path.join('./work_dirs', 'tiny_regression')
    assert cfg.default_hooks.checkpoint.type == 'mmeff.AtomicCheckpointHook'
    assert cfg.launcher == 'none' and not cfg.get('resume')
    cfg = launch.build_train_config([tiny_config, '--resume', '--launcher', 'pytorch',
                                     '--cfg-options', 'train_cfg.max_epochs=5',
                                     'default_hooks.checkpoint.type=mmengine.CheckpointHook'])
    assert cfg.resume is True and cfg.load_from is None and cfg.launcher == 'pytorch'
    assert cfg.train_cfg.max_epochs == 5
    assert cfg.default_hooks.checkpoint.type == 'mmengine.CheckpointHook'  # explicit: kept
    runner = launch.build_runner(launch.build_train_config(
        tiny.run_args(tiny_config, tmp_path / 'w', options=['runner_type=LaunchTestRunner'])))
    assert type(runner) is tiny.Runner


def test_bad_options_fail_clearly(tiny_config, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='--amp needs a CUDA'):
            launch.build_train_config([tiny_config, '--amp'])
    with pytest.raises(ValueError, match='auto_scale_lr'):
        launch.build_train_config([tiny_config, '--auto-scale-lr'])
    with pytest.raises(FileNotFoundError, match='config file not found'):
        launch.build_train_config([str(tmp_path / 'nope.py')])
    work_dir = tmp_path / 'dangling'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_9.pth'))
    with pytest.raises(FileNotFoundError, match='epoch_9.pth'):
        launch.build_train_config([tiny_config, '--work-dir', str(work_dir), '--resume'])


@pytest.mark.parametrize('scope', ['mmfoo', None])
def test_unknown_or_missing_scope(tmp_path, scope):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'default_scope = {scope!r}\n' if scope else 'model = dict()\n')
    with pytest.raises(ValueError, match=r"support \['mmdet', 'mmeff', 'mmengine', 'mmseg'\]"):
        launch.build_train_config([str(cfg)])


def test_scopes_register_their_packages():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    launch.register_scope('mmdet')
    launch.register_scope('mmseg')
    assert 'MaskRCNN' in DET_MODELS.module_dict
    assert 'EncoderDecoder' in SEG_MODELS.module_dict
    from mmeff.registry import HOOKS
    assert HOOKS.get('AtomicCheckpointHook') is not None


def test_dist_scripts_build_the_torchrun_command(tmp_path):
    env = dict(os.environ, PYTHON='echo', NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.2',
               PORT='29999')
    out = subprocess.run(['bash', str(REPO / 'tools/dist_train.sh'), 'cfg.py', '4', '--amp'],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[:8] == ['-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1',
                       '--master_addr=10.0.0.2', '--nproc_per_node=4', '--master_port=29999',
                       str(REPO / 'tools/train.py')]
    assert out[8:] == ['cfg.py', '--launcher', 'pytorch', '--amp']
    out = subprocess.run(['bash', str(REPO / 'tools/dist_test.sh'), 'cfg.py', 'w.pth', '2'],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[7:] == [str(REPO / 'tools/test.py'), 'cfg.py', 'w.pth', '--launcher', 'pytorch']
    usage = subprocess.run(['bash', str(REPO / 'tools/dist_train.sh'), 'cfg.py'], env=env,
                           capture_output=True, text=True)
    assert usage.returncode == 2 and 'usage' in usage.stderr


def test_train_tool_reports_missing_data(tmp_path):
    """The thin script end to end, in a fresh interpreter: fails before building anything."""
    cfg = tmp_path / 'det.py'
    cfg.write_text("default_scope = 'mmdet'\n"
                   "train_dataloader = dict(dataset=dict(type='CocoDataset', "
                   "data_root='data/coco/', ann_file='annotations/instances_train2017.json'))\n")
    proc = subprocess.run([sys.executable, str(REPO / 'tools/train.py'), str(cfg)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'MissingDataError' in proc.stderr and str(tmp_path / 'data/coco') in proc.stderr
    assert 'Traceback' not in proc.stderr  # a message, not a stack dump
    assert 'python tools/make_toy_data.py --kinds coco --out data/toy' in proc.stderr
