"""Training/test machinery: hooks, the train/test entry points (``mmeff.engine.launch``)."""
from mmeff.engine.hooks import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook']
