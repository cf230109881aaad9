"""Whether a forward is being recorded as a graph (ONNX / CoreML / TorchScript export).

Deploy forms use it to pick, per backend, the formulation that runs fastest there: PyTorch's
eager CPU kernels favour channels-last linears, while graph runtimes (ONNX Runtime's NCHWc
layout transformer, CoreML) favour plain NCHW convolutions that they can keep in their own
blocked layout from one op to the next (docs/deploy_speed.md).
"""
import torch


def is_graph_export() -> bool:
    """True while tracing or scripting (every exporter of :mod:`mmeff.deploy.export` traces)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()
