"""Training/test machinery: hooks, the train/test entry points (``mmeff.engine.launch``)."""
from mmeff.engine.hooks import AtomicCheckpointHook, NonFiniteCheckHook

__all__ = ['AtomicCheckpointHook', 'NonFiniteCheckHook']
