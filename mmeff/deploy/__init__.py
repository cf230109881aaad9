"""Deployment: BN folding, bias freezing, export (ONNX / CoreML / TorchScript) and benchmarks.

Export and benchmark modules import their runtimes (onnx, onnxruntime, coremltools) lazily, so
importing this package needs none of them.
"""
from .complexity import count_macs, count_params
from .deploy_path import deploy
from .export import ExportOptions, ExportReport, export
from .fuse import freeze_attention_biases, fuse
from .parts import make_part

__all__ = ['fuse', 'freeze_attention_biases', 'deploy', 'export', 'ExportOptions',
           'ExportReport', 'make_part', 'count_macs', 'count_params']
