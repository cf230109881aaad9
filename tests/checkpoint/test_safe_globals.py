"""safe_globals(): mmengine runner state loads with weights_only=True, nothing more does."""
import io
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmeff.checkpoint import safe_globals


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_message_hub_state_loads_only_inside_the_block():
    hub = MessageHub.get_instance('safe-globals-test')
    for value in (1.5, 2.5, np.float32(3.0)):
        hub.update_scalar('train/loss', value)
    hub.update_info('best_score', np.float64(0.75))
    state = dict(message_hub=hub.state_dict(), meta=dict(seed=np.int64(3)))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(_roundtrip(state), weights_only=True)
    with safe_globals():
        loaded = torch.load(_roundtrip(state), weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.mean() == pytest.approx(7 / 3)
    assert loaded['message_hub']['runtime_info']['best_score'] == 0.75


class _Evil:
    """Pickles as getattr(<obj>, <name>): the door a blanket getattr allow-list would open."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


@pytest.mark.parametrize('obj, name', [(HistoryBuffer, '__init__'), (HistoryBuffer, 'nope'),
                                       (np.ndarray, 'tofile'), (HistoryBuffer, '__class__')])
def test_getattr_is_limited_to_history_buffer_methods(obj, name):
    with safe_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(_roundtrip({'x': _Evil(obj, name)}), weights_only=True)
    with safe_globals():  # the legitimate use
        assert torch.load(_roundtrip({'m': _Evil(HistoryBuffer, 'mean')}),
                          weights_only=True)['m'] is HistoryBuffer.mean
