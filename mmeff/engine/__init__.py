"""Training/test machinery: hooks, the train/test entry points (``mmeff.engine.launch``)."""
from .hooks import AtomicCheckpointHook

__all__ = ['AtomicCheckpointHook']
