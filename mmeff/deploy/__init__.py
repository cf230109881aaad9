"""Deployment: BN folding, bias freezing, the deploy path, export (ONNX / CoreML / TorchScript),
graph checks and parity reports (docs/design.md, "model -> fuse -> export").

Export modules import their runtimes (onnx, onnxruntime, coremltools) lazily, so importing this
package needs none of them. Measurement lives in :mod:`mmeff.benchmark`.
"""
from mmeff.deploy.cpu_compile import CompiledForCPU, compile_for_cpu
from mmeff.deploy.deploy_path import deploy
from mmeff.deploy.export import ExportOptions, ExportReport, export
from mmeff.deploy.parts import make_part
from mmeff.models.layers.fusion import freeze_attention_biases, fuse

__all__ = ['fuse', 'freeze_attention_biases', 'deploy', 'compile_for_cpu', 'CompiledForCPU',
           'export', 'ExportOptions', 'ExportReport', 'make_part']
