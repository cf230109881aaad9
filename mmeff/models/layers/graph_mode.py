"""Whether a forward is being recorded as a graph (ONNX / CoreML / TorchScript export) or
should run the forms written for graphs anyway (:func:`graph_forms`).

Deploy forms use it to pick, per backend, the formulation that runs fastest there: PyTorch's
eager CPU kernels favour channels-last linears, while graph runtimes (ONNX Runtime's NCHWc
layout transformer, CoreML) favour plain NCHW convolutions that they can keep in their own
blocked layout from one op to the next (docs/deploy_speed.md). TorchInductor with freezing
is such a runtime too: it fuses oneDNN 1x1 convolutions with their GELU and prepacks their
weights, where it would call MKL's linear (slow on AMD CPUs) for the channels-last linears,
so :func:`mmeff.deploy.compile_for_cpu` compiles inside :func:`graph_forms`, where the blocks
that check :func:`use_graph_forms` take their graph forms.
"""
import contextlib
from typing import Iterator

import torch

#: set by :func:`graph_forms`; a module global so that TorchDynamo guards on its value
_GRAPH_FORMS = False


def is_graph_export() -> bool:
    """True while tracing or scripting (every exporter of :mod:`mmeff.deploy.export` traces)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def is_recording_graph() -> bool:
    """True while any graph is recorded: tracing, scripting (:func:`is_graph_export`) or a
    compiler's capture (``torch.compile``, ``torch.export``). What eager-only code checks: CPU
    fast paths written as autograd functions or layout tricks, caches whose tensors a graph
    would bake in as constants, data-dependent checks that fake tensors cannot run."""
    return is_graph_export() or torch.compiler.is_compiling()


def use_graph_forms() -> bool:
    """True while exporting (:func:`is_graph_export`) and inside :func:`graph_forms`: what a
    block checks whose graph form is also the faster one under TorchInductor (EfficientFormer's
    MB4D; EfficientViT's attention keeps its token form there, measured faster)."""
    return _GRAPH_FORMS or is_graph_export()


def is_compiling_for_cpu() -> bool:
    """True inside :func:`graph_forms` but not while exporting: the model is being traced for
    :func:`mmeff.deploy.compile_for_cpu`. What a block checks whose fastest form under
    TorchInductor differs from both its eager and its export form (docs/deploy_speed.md,
    "PyTorch on CPU"): EfficientFormerV2's 2x bilinear upsampling written out (Inductor's
    lowering of ``interpolate`` took 4.5 ms of V2-S0's 21 ms forward), EfficientViT's q
    depth-wise conv as a conv instead of gathered matrices. (``GELU2d`` drops its NHWC permutes
    under any compiler or export, ``torch.compiler.is_compiling()``.)"""
    return _GRAPH_FORMS and not is_graph_export()


@contextlib.contextmanager
def graph_forms() -> Iterator[None]:
    """Make :func:`use_graph_forms` true inside the block (restored after, nesting allowed).

    A ``torch.compile`` d module traced inside it must also be called inside it: TorchDynamo
    guards on the flag and would recompile the other forms outside."""
    global _GRAPH_FORMS
    saved, _GRAPH_FORMS = _GRAPH_FORMS, True
    try:
        yield
    finally:
        _GRAPH_FORMS = saved
