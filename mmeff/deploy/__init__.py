"""Deployment: BN folding, bias freezing, export and latency benchmarking."""
from .fuse import freeze_attention_biases, fuse

__all__ = ['fuse', 'freeze_attention_biases']
