"""Runner checkpoint types: after ``import mmeff`` mmengine's runner state loads with
weights_only=True (what OpenMMLab's inference APIs use), and nothing more does."""
import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmeff.checkpoint import allow_runner_checkpoints


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def _runner_state() -> dict:
    hub = MessageHub.get_instance('safe-globals-test')
    for value in (1.5, 2.5, np.float32(3.0)):
        hub.update_scalar('train/loss', value)
    hub.update_info('best_score', np.float64(0.75))
    return dict(message_hub=hub.state_dict(), meta=dict(seed=np.int64(3)))


@pytest.fixture
def cleared_allow_list():
    """torch's process-wide allow-list emptied for the test, restored afterwards."""
    before = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(before)


def test_message_hub_state_loads_once_allowed(cleared_allow_list):
    state = _runner_state()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(_roundtrip(state), weights_only=True)
    allow_runner_checkpoints()
    loaded = torch.load(_roundtrip(state), weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.mean() == pytest.approx(7 / 3)
    assert loaded['message_hub']['runtime_info']['best_score'] == 0.75


def test_import_mmeff_allows_them_in_a_fresh_process():
    """What MMDet's init_detector relies on: the config's custom_imports imports mmeff, and
    from then on mmengine's checkpoint loading (weights_only=True) accepts runner state."""
    code = (
        'import io, torch\n'
        'from mmengine.logging import MessageHub\n'
        'import mmeff\n'
        'hub = MessageHub.get_instance("x"); hub.update_scalar("loss", 1.0)\n'
        'buf = io.BytesIO(); torch.save(hub.state_dict(), buf)\n'
        'buf.seek(0); torch.load(buf, weights_only=True); print("loaded")\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and 'loaded' in done.stdout, done.stderr[-2000:]


class _Evil:
    """Pickles as getattr(<obj>, <name>): the door a blanket getattr allow-list would open."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


@pytest.mark.parametrize('obj, name', [(HistoryBuffer, '__init__'), (HistoryBuffer, 'nope'),
                                       (np.ndarray, 'tofile'), (HistoryBuffer, '__class__')])
def test_getattr_is_limited_to_history_buffer_methods(obj, name):
    allow_runner_checkpoints()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(_roundtrip({'x': _Evil(obj, name)}), weights_only=True)
    legitimate = _roundtrip({'m': _Evil(HistoryBuffer, 'mean')})
    assert torch.load(legitimate, weights_only=True)['m'] is HistoryBuffer.mean
