"""Hooks registered in ``mmeff.registry.HOOKS``."""
from .atomic_checkpoint_hook import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook']
