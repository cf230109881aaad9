"""Hooks registered in ``mmeff.registry.HOOKS``."""
from mmeff.engine.hooks.atomic_checkpoint_hook import AtomicCheckpointHook, NonFiniteWeightsError
from mmeff.engine.hooks.non_finite_hook import NonFiniteCheckHook, NonFiniteError

__all__ = ['AtomicCheckpointHook', 'NonFiniteWeightsError', 'NonFiniteCheckHook',
           'NonFiniteError']
