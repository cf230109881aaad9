"""Hooks registered in ``mmeff.registry.HOOKS``."""
from mmeff.engine.hooks.atomic_checkpoint_hook import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook']
