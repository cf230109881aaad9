"""The process-wide byte-bounded cache every attention block keeps its derived tensors in."""
import copy
import gc
import pickle

import pytest
import torch

from mmeff.models.layers import (TensorCache, cache_budget_bytes, cached_bytes,
                                 clear_all_caches, set_cache_budget)
from mmeff.models.layers import tensor_cache

KIB = 1024


@pytest.fixture
def budget():
    """Set a budget in MiB for the test; the previous one and an empty store afterwards."""
    before = cache_budget_bytes()
    clear_all_caches()
    yield set_cache_budget
    clear_all_caches()
    set_cache_budget(before / (1 << 20))


def floats(kib: int) -> torch.Tensor:
    return torch.zeros(kib * KIB // 4)


def test_bounded_in_bytes_least_recently_used_out(budget):
    budget(10 * KIB / (1 << 20))  # 10 KiB
    a, b = TensorCache(), TensorCache()
    a.get_or_make('x', lambda: floats(4))
    b.get_or_make('x', lambda: floats(4))
    a.get_or_make('x', lambda: pytest.fail('a hit must not remake'))  # a is now the newest
    b.get_or_make('y', lambda: floats(4))  # 12 KiB > 10: the least recently used (b.x) goes
    assert cached_bytes() == 8 * KIB
    assert (len(a), len(b)) == (1, 1)
    remade = []
    b.get_or_make('x', lambda: remade.append(1) or floats(4))
    assert remade == [1]
    assert cached_bytes() <= cache_budget_bytes()


def test_value_larger_than_budget_is_returned_not_kept(budget):
    budget(1 * KIB / (1 << 20))
    cache = TensorCache()
    assert cache.get_or_make('big', lambda: floats(2)).numel() == 512
    assert len(cache) == 0 and cached_bytes() == 0


def test_new_stamp_replaces_the_entry(budget):
    budget(1.0)
    cache = TensorCache()
    first = cache.get_or_make('k', lambda: floats(1), stamp=1)
    second = cache.get_or_make('k', lambda: floats(1) + 1, stamp=2)
    assert second is not first and len(cache) == 1 and cached_bytes() == KIB


def test_lowering_the_budget_evicts_at_once(budget):
    budget(1.0)
    cache = TensorCache()
    for i in range(4):
        cache.get_or_make(i, lambda: floats(100))
    budget(250 * KIB / (1 << 20))
    assert cached_bytes() == 200 * KIB and len(cache) == 2


def test_zero_budget_caches_nothing(budget):
    budget(0)
    cache = TensorCache()
    cache.get_or_make('k', lambda: floats(1))
    assert len(cache) == 0


def test_copies_get_their_own_entries_and_collected_owners_free_theirs(budget):
    budget(1.0)
    cache = TensorCache()
    cache.get_or_make('k', lambda: floats(1))
    for twin in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert len(twin) == 0
        twin.get_or_make('k', lambda: floats(1))
        assert len(cache) == 1
    del twin
    gc.collect()
    assert cached_bytes() == KIB  # the copies are gone, and their entries with them
    del cache
    gc.collect()
    assert cached_bytes() == 0


def test_values_made_in_inference_mode_work_in_autograd(budget):
    budget(1.0)
    cache = TensorCache()
    with torch.inference_mode():
        made = cache.get_or_make('index', lambda: torch.arange(3))
    assert not made.is_inference() and not made.requires_grad
    weight = torch.ones(5, requires_grad=True)
    weight[cache.get_or_make('index', lambda: pytest.fail('must hit'))].sum().backward()
    assert weight.grad.tolist() == [1, 1, 1, 0, 0]


@pytest.mark.parametrize('bad', [-1, 'a lot', float('nan'), float('inf'), True])
def test_bad_budget_is_refused_with_the_fix(bad):
    with pytest.raises(ValueError, match='MiB >= 0'):
        set_cache_budget(bad)


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv('MMEFF_CACHE_MB', '0.5')
    assert tensor_cache._budget_from_env() == 512 * KIB
    monkeypatch.delenv('MMEFF_CACHE_MB')
    assert tensor_cache._budget_from_env() == tensor_cache.DEFAULT_BUDGET_MB * (1 << 20)
    monkeypatch.setenv('MMEFF_CACHE_MB', '128MB')
    with pytest.raises(ValueError, match=r"MMEFF_CACHE_MB='128MB' is not a size.*number >= 0"):
        tensor_cache._budget_from_env()
