"""Measurement: the one timer, the benchmark runner and its model registry, complexity
(parameters, MACs), activation memory and reports (docs/design.md, "benchmark").

Runtimes (onnxruntime) and MMSeg are imported lazily, only by the backends that need them.
"""
from mmeff.benchmark.complexity import count_macs, count_params

__all__ = ['count_macs', 'count_params']
