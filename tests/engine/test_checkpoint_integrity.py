"""Checkpoint integrity: digest records, verification on resume / test, fallback to the newest
intact checkpoint, and clear refusals (issue 15, "Found" 3)."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmeff.checkpoint import CheckpointIntegrityError, read_state_dict
from mmeff.engine import launch
from mmeff.engine.resume import NoIntactCheckpointError

REPO = Path(__file__).parents[2]


def _flip_bytes(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    'corrupted': (_flip_bytes, 'does not match its digest record'),
    'truncated': (lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 2]),
                  'does not match its digest record'),
    'zero-byte': (lambda p: p.write_bytes(b''), 'is an empty'),
}


@pytest.fixture
def trained(tiny, tiny_config, tmp_path):
    """Two epochs straight through: epoch_1.pth, epoch_2.pth (the latest) and their records."""
    work_dir = tmp_path / 'run'
    runner = launch.train(tiny.run_args(tiny_config, work_dir))
    return work_dir, tiny.weights(runner)


def test_each_checkpoint_has_a_sha256sum_record(trained):
    work_dir, _ = trained
    for name in ('epoch_1.pth', 'epoch_2.pth'):
        digest, recorded_name = (work_dir / f'{name}.sha256').read_text().split()
        assert recorded_name == name
        assert digest == hashlib.sha256((work_dir / name).read_bytes()).hexdigest()
    assert not list(work_dir.glob('*.tmp'))


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_resume_skips_a_damaged_latest_checkpoint(tiny, tiny_config, trained, capsys, damage):
    """The latest checkpoint is damaged: --resume says so and resumes from epoch_1.pth, which
    gives exactly the weights of the run that was never interrupted."""
    work_dir, reference = trained
    damage_fn, reason = DAMAGE[damage]
    damage_fn(work_dir / 'epoch_2.pth')
    with pytest.raises(CheckpointIntegrityError, match=reason):
        read_state_dict(str(work_dir / 'epoch_2.pth'))  # loading verifies too
    capsys.readouterr()
    runner = launch.train(tiny.run_args(tiny_config, work_dir, '--resume'))
    err = capsys.readouterr().err
    assert f'skipped {work_dir / "epoch_2.pth"}: ' in err and reason in err
    assert f'resuming from {work_dir / "epoch_1.pth"}' in err
    weights = tiny.weights(runner)
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_empty_last_checkpoint_falls_back_to_the_newest_file(tiny, tiny_config, trained,
                                                            capsys):
    work_dir, _ = trained
    (work_dir / 'last_checkpoint').write_text('')
    cfg = launch.build_train_config(tiny.run_args(tiny_config, work_dir, '--resume'))
    assert cfg.load_from == str(work_dir / 'epoch_2.pth') and cfg.resume is True
    assert 'last_checkpoint: the file is empty' in capsys.readouterr().err


def test_no_intact_checkpoint_is_an_input_error(tiny, tiny_config, trained, capsys):
    work_dir, _ = trained
    (work_dir / 'epoch_2.pth').write_bytes(b'')
    _flip_bytes(work_dir / 'epoch_1.pth')
    with pytest.raises(SystemExit) as info:
        launch.main('train', tiny.run_args(tiny_config, work_dir, '--resume'))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'NoIntactCheckpointError: --resume found no intact checkpoint' in err
    assert 'epoch_1.pth' in err and 'epoch_2.pth' in err and 'Traceback' not in err
    with pytest.raises(NoIntactCheckpointError):
        launch.build_train_config(tiny.run_args(tiny_config, work_dir, '--resume'))


def test_explicit_checkpoint_is_verified(tiny, tiny_config, trained, tmp_path):
    """--resume PATH and tools/test.py CHECKPOINT refuse a damaged file with the reason."""
    work_dir, _ = trained
    (work_dir / 'epoch_2.pth').write_bytes(b'')
    with pytest.raises(CheckpointIntegrityError, match='epoch_2.pth.*empty'):
        launch.build_train_config(tiny.run_args(tiny_config, tmp_path / 'w', '--resume',
                                                str(work_dir / 'epoch_2.pth')))
    with pytest.raises(CheckpointIntegrityError, match='epoch_2.pth.*empty'):
        launch.build_test_config([tiny_config, str(work_dir / 'epoch_2.pth')])


def test_non_finite_weights_are_refused(tiny, tiny_config, trained, tmp_path):
    """A checkpoint of a diverged run (intact bytes, NaN weights) is not resumed from."""
    work_dir, _ = trained
    ckpt = torch.load(work_dir / 'epoch_2.pth', weights_only=False)
    ckpt['state_dict']['fc.0.weight'][0, 0] = float('nan')
    nan_path = tmp_path / 'nan.pth'
    torch.save(ckpt, nan_path)
    with pytest.raises(CheckpointIntegrityError, match=r'non-finite .*\(fc\.0\.weight\)'):
        launch.build_train_config(tiny.run_args(tiny_config, tmp_path / 'w', '--resume',
                                                str(nan_path)))


def test_test_tool_exits_2_on_a_zero_byte_checkpoint(tiny_config, tmp_path):
    """The script end to end: a message naming the file and the fix, status 2."""
    (tmp_path / 'empty.pth').write_bytes(b'')
    proc = subprocess.run([sys.executable, str(REPO / 'tools/test.py'), tiny_config,
                           str(tmp_path / 'empty.pth'), '--work-dir', str(tmp_path / 'w')],
                          cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert 'CheckpointIntegrityError' in proc.stderr and 'empty.pth' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_resume_needs_a_training_checkpoint(tiny, tiny_config, trained, tmp_path):
    """Plain weights are no resume point: the fix (load_from) is named."""
    work_dir, _ = trained
    weights = tmp_path / 'weights.pth'
    torch.save(torch.load(work_dir / 'epoch_2.pth', weights_only=False)['state_dict'], weights)
    with pytest.raises(CheckpointIntegrityError, match='no training state.*load_from='):
        launch.build_train_config(tiny.run_args(tiny_config, tmp_path / 'w', '--resume',
                                                str(weights)))
